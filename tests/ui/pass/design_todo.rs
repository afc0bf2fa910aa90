//! The DESIGN.md `Todo`, with only the prelude and serde's derives in scope.
use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
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

fn main() {
    let q: Query<Todo> = Query::new()
        .filter(Todo::fields().is_completed.eq(false))
        .order_by(Todo::fields().priority.desc())
        .limit(20);
    assert!(q.limit_value() == Some(20));
}
