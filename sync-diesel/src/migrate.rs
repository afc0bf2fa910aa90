//! [`MigrationGenerator`]: Diesel migration folders generated from model schemas.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sync_core::SyncModel;
use sync_schema::ModelSchema;

use crate::ddl::{self, ident, Backend};
use crate::error::{Error, Result};

/// File name of the schema snapshot kept beside the migration folders.
pub const SNAPSHOT_FILE: &str = "schema_snapshot.json";

const VERSION_FORMAT: &str = "%Y-%m-%d-%H%M%S";

/// Writes standard Diesel migration folders (`<version>_create_todos/up.sql`
/// and `down.sql`) for models, and a schema snapshot (`schema_snapshot.json`)
/// beside them. A later run compares the models with the snapshot and writes
/// only the difference: a new field becomes `ALTER TABLE ... ADD COLUMN` (with
/// the zero value of its type as default when it is not an `Option`), a new or
/// removed `#[sync(index)]` an index change. A removed or retyped field would
/// lose data and is refused with [`Error::Destructive`] naming the field,
/// unless [`allow_destructive`](MigrationGenerator::allow_destructive) is set.
///
/// The output is deterministic: the same models, snapshot and
/// [`timestamp`](MigrationGenerator::timestamp) give byte-identical files.
///
/// ```no_run
/// # use sync_testkit::Todo;
/// use sync_diesel::{Backend, MigrationGenerator};
/// let written = MigrationGenerator::new("migrations/sqlite")
///     .model::<Todo>()
///     .backend(Backend::Sqlite)
///     .write()?;
/// for m in &written {
///     println!("wrote {}", m.name);
/// }
/// # Ok::<(), sync_diesel::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MigrationGenerator {
    dir: PathBuf,
    models: Vec<&'static ModelSchema>,
    backend: Backend,
    allow_destructive: bool,
    timestamp: Option<NaiveDateTime>,
}

/// One migration folder the generator wrote (or would write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedMigration {
    /// Folder name, `<version>_<what>` (e.g. `2025-01-01-000000_create_todos`).
    pub name: String,
    /// Contents of `up.sql`.
    pub up: String,
    /// Contents of `down.sql`.
    pub down: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    backend: String,
    tables: Vec<TableSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TableSnapshot {
    table: String,
    model_type: String,
    columns: Vec<ColumnSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ColumnSnapshot {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    nullable: bool,
    primary_key: bool,
    index: bool,
}

fn table_snapshot(schema: &ModelSchema, backend: Backend) -> TableSnapshot {
    TableSnapshot {
        table: schema.table.to_owned(),
        model_type: schema.model_type.to_owned(),
        columns: schema
            .fields
            .iter()
            .map(|f| ColumnSnapshot {
                name: f.column.to_owned(),
                sql_type: backend.column_type(f.sql_type).to_owned(),
                nullable: f.nullable,
                primary_key: f.id,
                index: f.index,
            })
            .collect(),
    }
}

impl MigrationGenerator {
    /// A generator writing into `dir` (created if missing), for SQLite unless
    /// [`backend`](MigrationGenerator::backend) says otherwise.
    pub fn new(dir: impl AsRef<Path>) -> MigrationGenerator {
        MigrationGenerator {
            dir: dir.as_ref().to_path_buf(),
            models: Vec::new(),
            backend: Backend::Sqlite,
            allow_destructive: false,
            timestamp: None,
        }
    }

    /// Adds a model.
    pub fn model<M: SyncModel>(self) -> MigrationGenerator {
        self.schema(M::SCHEMA)
    }

    /// Adds a model by its schema.
    pub fn schema(mut self, schema: &'static ModelSchema) -> MigrationGenerator {
        if !self.models.iter().any(|m| std::ptr::eq(*m, schema)) {
            self.models.push(schema);
        }
        self
    }

    /// The SQL dialect. Default SQLite.
    pub fn backend(mut self, backend: Backend) -> MigrationGenerator {
        self.backend = backend;
        self
    }

    /// Writes migrations that drop or retype columns (losing their data)
    /// instead of refusing them. Default false.
    pub fn allow_destructive(mut self, allow: bool) -> MigrationGenerator {
        self.allow_destructive = allow;
        self
    }

    /// Version time of the first folder written (later ones follow a second
    /// apart, and always after the newest existing folder). Default: now.
    pub fn timestamp(mut self, time: NaiveDateTime) -> MigrationGenerator {
        self.timestamp = Some(time);
        self
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>> {
        let path = self.snapshot_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| Error::Snapshot {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if snapshot.backend != self.backend.name() {
            return Err(Error::Snapshot {
                path,
                reason: format!(
                    "it describes {} tables but the generator targets {}; use one directory per backend",
                    snapshot.backend,
                    self.backend.name()
                ),
            });
        }
        Ok(Some(snapshot))
    }

    /// Latest version among the existing migration folders.
    fn latest_version(&self) -> Result<Option<NaiveDateTime>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "read directory",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut latest = None;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.split('_').next() else {
                continue;
            };
            if let Ok(t) = NaiveDateTime::parse_from_str(version, VERSION_FORMAT) {
                latest = latest.max(Some(t));
            }
        }
        Ok(latest)
    }

    /// The migrations [`write`](MigrationGenerator::write) would write, and
    /// the new snapshot; writes nothing.
    fn compute(&self) -> Result<(Vec<GeneratedMigration>, Snapshot)> {
        if self.models.is_empty() {
            return Err(Error::Config(
                "no model given; add one with .model::<T>()".into(),
            ));
        }
        let mut by_table: BTreeMap<&str, &'static ModelSchema> = BTreeMap::new();
        for model in &self.models {
            if let Some(other) = by_table.insert(model.table, model) {
                return Err(Error::Config(format!(
                    "models {} and {} both use table `{}`",
                    other.model_type, model.model_type, model.table
                )));
            }
        }
        let old = self.read_snapshot()?;
        let mut tables: BTreeMap<String, TableSnapshot> = old
            .map(|s| s.tables.into_iter().map(|t| (t.table.clone(), t)).collect())
            .unwrap_or_default();
        let mut time = self
            .timestamp
            .unwrap_or_else(|| Utc::now().naive_utc().with_nanosecond_zero());
        if let Some(latest) = self.latest_version()? {
            if time <= latest {
                time = latest + TimeDelta::seconds(1);
            }
        }
        let mut out = Vec::new();
        for (table, schema) in by_table {
            let new = table_snapshot(schema, self.backend);
            let generated = match tables.get(table) {
                None => Some(self.create(schema)),
                Some(previous) => self.alter(schema, previous, &new)?,
            };
            if let Some((what, up, down)) = generated {
                out.push(GeneratedMigration {
                    name: format!("{}_{what}", time.format(VERSION_FORMAT)),
                    up,
                    down,
                });
                time += TimeDelta::seconds(1);
            }
            tables.insert(table.to_owned(), new);
        }
        let snapshot = Snapshot {
            format: 1,
            backend: self.backend.name().to_owned(),
            tables: tables.into_values().collect(),
        };
        Ok((out, snapshot))
    }

    fn create(&self, schema: &ModelSchema) -> (String, String, String) {
        let header = format!(
            "-- Generated by sync-diesel's MigrationGenerator from model {} ({}).\n",
            schema.struct_name, schema.model_type
        );
        let mut up = header.clone();
        for statement in ddl::create_model_statements(schema, self.backend, false) {
            up.push('\n');
            up.push_str(&statement);
        }
        let down = format!("{header}\nDROP TABLE {};\n", ident(schema.table));
        (format!("create_{}", schema.table), up, down)
    }

    fn alter(
        &self,
        schema: &ModelSchema,
        previous: &TableSnapshot,
        new: &TableSnapshot,
    ) -> Result<Option<(String, String, String)>> {
        let table = schema.table;
        let mut up = Vec::new();
        let mut down = Vec::new();
        let add_column = |column: &ColumnSnapshot| {
            let field = schema.field_by_column(&column.name);
            let mut def = format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                ident(table),
                ident(&column.name),
                column.sql_type
            );
            if !column.nullable {
                let zero = field.map_or("''", |f| self.backend.zero_literal(f.sql_type));
                let _ = write!(def, " NOT NULL DEFAULT {zero}");
            }
            def.push_str(";\n");
            def
        };
        let drop_column = |name: &str| {
            format!(
                "ALTER TABLE {} DROP COLUMN {};\n",
                ident(table),
                ident(name)
            )
        };
        let restore_column = |column: &ColumnSnapshot| {
            let mut def = format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                ident(table),
                ident(&column.name),
                column.sql_type
            );
            if !column.nullable {
                def.push_str(" NOT NULL DEFAULT ''");
            }
            def.push_str(";\n");
            def
        };
        for old in &previous.columns {
            match new.columns.iter().find(|c| c.name == old.name) {
                None => {
                    self.refuse(schema, &old.name, "was removed".into())?;
                    if old.index {
                        up.push(ddl::drop_index(table, &old.name));
                    }
                    up.push(drop_column(&old.name));
                    down.push(restore_column(old));
                }
                Some(current)
                    if current.sql_type != old.sql_type
                        || current.nullable != old.nullable
                        || current.primary_key != old.primary_key =>
                {
                    if current.primary_key || old.primary_key {
                        return Err(Error::Destructive {
                            model: schema.model_type.to_owned(),
                            table: table.to_owned(),
                            field: old.name.clone(),
                            change: "changed its id column; a table's primary key cannot be \
                                     altered in place, write this migration by hand"
                                .into(),
                        });
                    }
                    let change = describe_retype(old, current);
                    self.refuse(schema, &old.name, change)?;
                    if old.index {
                        up.push(ddl::drop_index(table, &old.name));
                    }
                    up.push(drop_column(&old.name));
                    up.push(add_column(current));
                    if current.index {
                        up.push(ddl::create_index(table, &current.name, false));
                    }
                    down.push(drop_column(&current.name));
                    down.push(restore_column(old));
                }
                Some(current) if current.index != old.index => {
                    if current.index {
                        up.push(ddl::create_index(table, &current.name, false));
                        down.push(ddl::drop_index(table, &current.name));
                    } else {
                        up.push(ddl::drop_index(table, &current.name));
                        down.push(ddl::create_index(table, &current.name, false));
                    }
                }
                Some(_) => {}
            }
        }
        for current in &new.columns {
            if previous.columns.iter().any(|c| c.name == current.name) {
                continue;
            }
            if current.primary_key {
                return Err(Error::Destructive {
                    model: schema.model_type.to_owned(),
                    table: table.to_owned(),
                    field: current.name.clone(),
                    change: "is a new id column; a table's primary key cannot be altered in \
                             place, write this migration by hand"
                        .into(),
                });
            }
            up.push(add_column(current));
            if current.index {
                up.push(ddl::create_index(table, &current.name, false));
                down.push(ddl::drop_index(table, &current.name));
            }
            down.push(drop_column(&current.name));
        }
        if up.is_empty() {
            return Ok(None);
        }
        let header = format!(
            "-- Generated by sync-diesel's MigrationGenerator from model {} ({}).\n\n",
            schema.struct_name, schema.model_type
        );
        down.reverse();
        Ok(Some((
            format!("alter_{table}"),
            header.clone() + &up.concat(),
            header + &down.concat(),
        )))
    }

    fn refuse(&self, schema: &ModelSchema, column: &str, change: String) -> Result<()> {
        if self.allow_destructive {
            return Ok(());
        }
        Err(Error::Destructive {
            model: schema.model_type.to_owned(),
            table: schema.table.to_owned(),
            field: column.to_owned(),
            change,
        })
    }

    /// The migrations a [`write`](MigrationGenerator::write) would produce
    /// now, without writing anything. Empty when the directory is up to date.
    pub fn plan(&self) -> Result<Vec<GeneratedMigration>> {
        self.compute().map(|(migrations, _)| migrations)
    }

    /// Writes the new migration folders and the updated snapshot; returns
    /// what was written (empty when nothing changed).
    pub fn write(self) -> Result<Vec<GeneratedMigration>> {
        let (migrations, snapshot) = self.compute()?;
        create_dir(&self.dir)?;
        for m in &migrations {
            let folder = self.dir.join(&m.name);
            create_dir(&folder)?;
            write_file(&folder.join("up.sql"), &m.up)?;
            write_file(&folder.join("down.sql"), &m.down)?;
        }
        let mut text = serde_json::to_string_pretty(&snapshot).map_err(|e| Error::Snapshot {
            path: self.snapshot_path(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        let path = self.snapshot_path();
        let unchanged = fs::read_to_string(&path).is_ok_and(|old| old == text);
        if !unchanged {
            write_file(&path, &text)?;
        }
        Ok(migrations)
    }
}

fn describe_retype(old: &ColumnSnapshot, new: &ColumnSnapshot) -> String {
    let null = |c: &ColumnSnapshot| if c.nullable { " NULL" } else { " NOT NULL" };
    format!(
        "changed type from {}{} to {}{}",
        old.sql_type,
        null(old),
        new.sql_type,
        null(new)
    )
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::Io {
        action: "create directory",
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}
