//! Writes the repository's top-level `migrations/sqlite` and
//! `migrations/postgres` from the test models (only what changed since the
//! last run, per the schema snapshot in each folder).
//!
//! ```text
//! cargo run -p sync-diesel --example regenerate_migrations
//! ```

#[allow(unreachable_pub, dead_code)]
#[path = "../tests/support/generator.rs"]
mod generator;

use std::path::Path;

use sync_diesel::Backend;

fn main() -> Result<(), sync_diesel::Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = root.join(backend.name());
        let written = generator::migration_generator(&dir, backend).write()?;
        if written.is_empty() {
            println!("{}: up to date", dir.display());
        }
        for m in written {
            println!("{}: wrote {}", dir.display(), m.name);
        }
    }
    Ok(())
}
