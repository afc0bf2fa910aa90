//! Third-party servers from npm, installed on first use into a cache folder under `target/`
//! of the workspace (one folder per package, so their dependencies never meet).

use std::path::PathBuf;
use std::process::Stdio;

/// The path of `bin` of npm package `spec` (`json-server@0.17.4`), installed into
/// `target/{folder}` when missing. `None`, with the reason printed, when npm is missing or the
/// install fails, unless `SYNC_TEST_REQUIRE_NPM` is set (as in CI): then the test fails
/// rather than skipping.
pub fn npm_bin(spec: &str, folder: &str, bin: &str) -> Option<PathBuf> {
    // The tests of one binary run on threads: one install at a time.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(folder);
    let path = root.join("node_modules/.bin").join(bin);
    if path.exists() {
        return Some(path);
    }
    std::fs::create_dir_all(&root).unwrap();
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&root)
        .arg(spec)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && path.exists() => Some(path),
        other => {
            let reason = format!("`npm install {spec}` failed ({other:?})");
            // CI (`.ci/run`) sets this so that a test can never pass by skipping.
            assert!(
                std::env::var_os("SYNC_TEST_REQUIRE_NPM").is_none(),
                "{reason}; SYNC_TEST_REQUIRE_NPM is set, so this fails instead of skipping"
            );
            eprintln!("skipping: {reason}");
            None
        }
    }
}
