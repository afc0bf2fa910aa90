//! The migration generator of the repository's top-level `migrations/`: the store tests' drift
//! check, the `regenerate_migrations` example and the benchmark include this file.

use sync_testkit::{Gadget, Todo};

/// The generator that writes the top-level `migrations/<backend>` folders
/// from the test models (run `cargo run -p sync-diesel --example
/// regenerate_migrations`); the drift test uses the same configuration.
pub fn migration_generator(
    dir: impl AsRef<std::path::Path>,
    backend: sync_diesel::Backend,
) -> sync_diesel::MigrationGenerator {
    sync_diesel::MigrationGenerator::new(dir)
        .backend(backend)
        .model::<Todo>()
        .model::<Gadget>()
        .timestamp(
            chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default(),
        )
}
