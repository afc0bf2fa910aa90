//! Snapshot tests of the expansion: the generated code for two representative
//! models is compared with reviewed files under `snapshots/`.
//!
//! After a deliberate change to the generated code, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p sync-derive` and review the diff.

use std::path::PathBuf;

fn expand(source: &str) -> String {
    let input: syn::DeriveInput = syn::parse_str(source).expect("test input parses");
    let tokens = crate::expand::derive(&input);
    let file: syn::File = syn::parse2(tokens).expect("expansion is valid Rust");
    prettyplease::unparse(&file)
}

fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(format!("{name}.rs.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "missing snapshot {}: {err}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "expansion of `{name}` differs from {} at line {}:\n expected: {:?}\n   actual: {:?}\nrun with UPDATE_SNAPSHOTS=1 to accept the new output",
            path.display(),
            first_diff + 1,
            expected.lines().nth(first_diff),
            actual.lines().nth(first_diff),
        );
    }
}

const TODO: &str = r##"
#[sync(model_type = "todo", endpoint = "todos", table = "todos", priority = 2, diesel_table)]
#[sync(rest(post(top_level_key = "document", supplemental = r#"{"collectionId":"c1"}"#, retry_count = 2)))]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    #[sync(id)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub is_completed: bool,
    #[sync(index)]
    pub priority: i32,
    #[sync(json)]
    pub tags: Vec<String>,
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}
"##;

const DOCUMENT: &str = r##"
#[sync(crate = "kit", endpoint = "documents", rest(
    get(url = "databases/{db}/collections/{coll}/documents", url_parameters(db = "main", coll = "docs"), response_data_key = "documents", timeout_ms = 2500, header = "X-Appwrite-Project: demo"),
    patch(url = "databases/{db}/collections/{coll}/documents/{id}", url_parameters(db = "main", coll = "docs"), top_level_key = "data", response_transformer = "crate::unwrap")
))]
pub(crate) struct Document {
    #[sync(id)]
    #[serde(rename = "$id")]
    pub uid: uuid::Uuid,
    #[sync(column = "body_text", skip_delta)]
    pub body: Option<String>,
    #[sync(skip)]
    #[serde(skip)]
    pub dirty: bool,
}
"##;

#[test]
fn snapshot_todo() {
    assert_snapshot("todo", &expand(TODO));
}

#[test]
fn snapshot_document() {
    assert_snapshot("document", &expand(DOCUMENT));
}

#[test]
fn errors_expand_to_compile_errors_and_a_stub() {
    let out = expand(
        r#"
        #[sync(colour = "red")]
        struct Broken { id: String }
        "#,
    );
    assert_eq!(out.matches("compile_error!").count(), 2, "{out}");
    assert!(
        out.contains("impl ::offline_sync_kit::__private::SyncModel for Broken"),
        "{out}"
    );
}
