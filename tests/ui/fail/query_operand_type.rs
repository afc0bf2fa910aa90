use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone)]
struct Todo {
    #[sync(id)]
    id: String,
    priority: i32,
    done: bool,
}

fn main() {
    let _ = Todo::fields().priority.gt("3");
    let _ = Todo::fields().done.gt(true);
    let _ = Todo::fields().priority.contains(3);
    let _ = Todo::fields().priority.is_null();
}
