//! The `table!` the derive generates: an application runs its own Diesel
//! queries on the table the store writes.

#![allow(clippy::unwrap_used)]

mod support;

use diesel::prelude::*;
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};
use support::{store_at, ClientDb};

/// The DESIGN.md model with the opt-in Diesel schema.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(endpoint = "todos", diesel_table)]
#[serde(rename_all = "camelCase")]
pub struct Todo {
    #[sync(id)]
    pub id: String,
    pub title: String,
    pub is_completed: bool,
    #[sync(index)]
    pub priority: i32,
    #[sync(json)]
    pub tags: Vec<String>,
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

fn todo(id: &str, title: &str) -> Todo {
    Todo {
        id: id.into(),
        title: title.into(),
        is_completed: false,
        priority: 1,
        tags: vec![],
        due: None,
    }
}

#[tokio::test]
async fn application_queries_the_generated_table_with_diesel() {
    let db = ClientDb::new();
    let sync = SyncManager::builder()
        .base_url("http://127.0.0.1:9")
        .store(store_at(&db.path()).await)
        .model::<Todo>()
        .options({
            let mut o = support::fast_options();
            o.auto_sync = false;
            o
        })
        .build()
        .await
        .unwrap();
    for (id, priority) in [("a", 1), ("b", 5), ("c", 9)] {
        let mut t = todo(id, &format!("task {id}"));
        t.priority = priority;
        t.tags = vec!["x".into()];
        sync.save(&t).await.unwrap();
    }
    sync.delete::<Todo>("c").await.unwrap();

    let mut conn = SqliteConnection::establish(db.path().to_str().unwrap()).unwrap();
    // `todos` is the module the derive generated for `Todo`.
    use self::todos::dsl;
    let rows: Vec<(String, String, i32, String, bool, bool)> = dsl::todos
        .filter(dsl::priority.gt(2))
        .order(dsl::id.asc())
        .select((
            dsl::id,
            dsl::title,
            dsl::priority,
            dsl::tags,
            dsl::_synced,
            dsl::_deleted,
        ))
        .load(&mut conn)
        .unwrap();
    // "c" was created and deleted before it was ever sent: row and op vanished together.
    assert_eq!(
        rows,
        vec![(
            "b".to_owned(),
            "task b".to_owned(),
            5,
            r#"["x"]"#.to_owned(),
            false,
            false
        )]
    );
    let pending: i64 = dsl::todos
        .filter(dsl::_synced.eq(false))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(pending, 2);
    sync.shutdown().await.unwrap();
}
