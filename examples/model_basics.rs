//! What `#[derive(SyncModel)]` gives a model: its schema, the delta JSON of
//! an edit, its REST requests and typed queries.
//!
//! Run with `cargo run --example model_basics`.

use offline_sync_kit::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(model_type = "todo", endpoint = "todos", table = "todos")]
#[sync(rest(post(
    top_level_key = "document",
    supplemental = r#"{"collectionId":"c1"}"#,
    retry_count = 2
)))]
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

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = Todo::SCHEMA;
    println!(
        "model `{}`: endpoint /{}, table `{}`, id field `{}`",
        schema.model_type,
        schema.endpoint,
        schema.table,
        schema.id().name
    );
    println!(
        "  {:<14} {:<14} {:<14} {:<15} flags",
        "field", "wire name", "column", "type"
    );
    for f in schema.fields {
        let mut flags = Vec::new();
        if f.id {
            flags.push("id");
        }
        if f.index {
            flags.push("index");
        }
        if f.nullable {
            flags.push("nullable");
        }
        if f.is_json() {
            flags.push("json");
        }
        println!(
            "  {:<14} {:<14} {:<14} {:<15} {}",
            f.name,
            f.wire_name,
            f.column,
            format!("{:?}", f.sql_type),
            flags.join(",")
        );
    }

    let before = Todo {
        id: "t1".into(),
        title: "Buy milk".into(),
        description: String::new(),
        is_completed: false,
        priority: 2,
        tags: vec!["home".into()],
        due: None,
    };
    let mut after = before.clone();
    after.is_completed = true;
    after.tags.push("done".into());

    let changed = after.changed_fields(&before);
    let delta = after.try_to_delta_json(changed)?;
    println!("\nedit: mark done and tag it");
    println!("  changed fields: {:?}", changed.wire_names(Todo::SCHEMA));
    println!(
        "  delta JSON:     {}",
        serde_json::Value::Object(delta.clone())
    );

    let mut replica = before.clone();
    replica.apply_delta(&delta)?;
    println!(
        "  applied to a copy of the original, equal to the edit: {}",
        replica == after
    );

    let base = "https://api.example.com/v1";
    let rest = Todo::rest_requests();
    println!("\nREST requests against {base}:");
    for method in RestMethod::ALL {
        let req = rest.resolve(method);
        let id = method.targets_item().then_some("t1");
        let url = req.build_url(base, Todo::ENDPOINT, id, Some(&delta))?;
        let body = match method {
            RestMethod::Post => Some(req.shape_body(after.to_record_json()?)),
            RestMethod::Patch => Some(req.shape_body(delta.clone())),
            RestMethod::Put => Some(req.shape_body(after.to_record_json()?)),
            RestMethod::Get | RestMethod::Delete => None,
        };
        print!("  {:<6} {url}", method.as_str());
        if let Some(retries) = req.retry_count {
            print!("  (retries: {retries})");
        }
        println!();
        if let Some(body) = body {
            println!("         body: {body}");
        }
    }

    let query = Query::new()
        .filter(Todo::fields().is_completed.eq(false))
        .filter(Todo::fields().priority.ge(2))
        .order_by(Todo::fields().priority.desc())
        .limit(20);
    println!("\nquery: open todos with priority >= 2, highest first");
    println!("  as URL parameters: {:?}", query.to_query_params()?);
    println!("  matches the original: {}", query.matches(&before));
    println!("  matches the edit:     {}", query.matches(&after));
    Ok(())
}
