//! Behaviour of `#[derive(SyncModel)]` on the DESIGN.md `Todo` and on models
//! that exercise every attribute.

use offline_sync_kit::prelude::*;
use offline_sync_kit::{Error, SqlType};
use serde_json::{json, Map, Value};
// The DESIGN.md `Todo`, with its REST override.
use sync_testkit::models::design::Todo;

fn todo() -> Todo {
    Todo {
        id: "t1".into(),
        title: "Buy milk".into(),
        description: String::new(),
        is_completed: false,
        priority: 2,
        tags: vec!["home".into()],
        due: None,
    }
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn schema_describes_the_design_todo() {
    let schema = Todo::SCHEMA;
    assert_eq!(Todo::MODEL_TYPE, "todo");
    assert_eq!(Todo::ENDPOINT, "todos");
    assert_eq!(schema.table, "todos");
    assert_eq!(schema.struct_name, "Todo");
    assert_eq!(schema.id().name, "id");
    let summary: Vec<_> = schema
        .fields
        .iter()
        .map(|f| {
            (
                f.name,
                f.wire_name,
                f.column,
                f.sql_type,
                f.nullable,
                f.index,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("id", "id", "id", SqlType::Text, false, false),
            ("title", "title", "title", SqlType::Text, false, false),
            (
                "description",
                "description",
                "description",
                SqlType::Text,
                false,
                false
            ),
            (
                "is_completed",
                "isCompleted",
                "is_completed",
                SqlType::Bool,
                false,
                false
            ),
            (
                "priority",
                "priority",
                "priority",
                SqlType::Integer,
                false,
                true
            ),
            ("tags", "tags", "tags", SqlType::Json, false, false),
            ("due", "due", "due", SqlType::Timestamp, true, false),
        ]
    );
    assert!(schema.fields[2].has_default);
    assert!(!schema.fields[1].has_default);
    for (i, f) in schema.fields.iter().enumerate() {
        assert_eq!(f.position, i);
    }
}

#[test]
fn delta_holds_exactly_the_changed_fields_under_wire_names() {
    let before = todo();
    let mut after = before.clone();
    after.is_completed = true;
    after.tags.push("urgent".into());
    after.due = Some("2026-01-02T03:04:05Z".parse().unwrap());
    let mask = after.changed_fields(&before);
    assert_eq!(
        mask.wire_names(Todo::SCHEMA),
        ["isCompleted", "tags", "due"]
    );
    assert_eq!(
        Value::Object(after.to_delta_json(mask)),
        json!({"isCompleted": true, "tags": ["home", "urgent"], "due": "2026-01-02T03:04:05Z"})
    );

    // Option back to None is a change to null.
    let mut cleared = after.clone();
    cleared.due = None;
    let mask = cleared.changed_fields(&after);
    assert_eq!(
        Value::Object(cleared.to_delta_json(mask)),
        json!({"due": null})
    );

    assert!(todo().changed_fields(&todo()).is_empty());
    assert!(todo().to_delta_json(FieldMask::EMPTY).is_empty());
}

#[test]
fn apply_delta_round_trips_a_delta() {
    let before = todo();
    let mut after = before.clone();
    after.title = "Buy oat milk".into();
    after.is_completed = true;
    after.tags = vec![];
    after.due = Some("2030-05-06T07:08:09.123Z".parse().unwrap());
    let delta = after.to_delta_json(after.changed_fields(&before));

    let mut replica = before.clone();
    let applied = replica.apply_delta(&delta).unwrap();
    assert_eq!(replica, after);
    assert_eq!(applied, after.changed_fields(&before));
}

#[test]
fn wrongly_typed_delta_value_names_the_field_and_changes_nothing() {
    let mut model = todo();
    let delta = obj(json!({"title": "fine", "priority": "high"}));
    let err = model.apply_delta(&delta).unwrap_err();
    match &err {
        Error::InvalidDeltaValue { model, field, .. } => {
            assert_eq!((*model, *field), ("todo", "priority"));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("`priority`"), "{err}");
    assert_eq!(model, todo(), "a failed delta must not change the model");
}

#[test]
fn unknown_delta_key_is_reported() {
    let mut model = todo();
    // Rust name instead of the wire name is unknown too.
    for key in ["colour", "is_completed"] {
        let mut delta = obj(json!({"title": "x"}));
        delta.insert(key.into(), json!(true));
        let err = model.apply_delta(&delta).unwrap_err();
        match &err {
            Error::UnknownDeltaField { key: k, known, .. } => {
                assert_eq!(k, key);
                assert!(known.contains("isCompleted"), "{known}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(model, todo());
    }
}

#[test]
fn full_record_json_equals_serde_json() {
    let mut t = todo();
    t.due = Some("2026-01-02T03:04:05Z".parse().unwrap());
    let ours = Value::Object(t.to_record_json().unwrap());
    let serde = serde_json::to_value(&t).unwrap();
    assert_eq!(ours, serde);
}

#[test]
fn rest_requests_come_from_the_attributes() {
    let rest = Todo::rest_requests();
    let post = rest.post.as_ref().expect("post configured");
    assert_eq!(post.method, RestMethod::Post);
    assert_eq!(post.top_level_key.as_deref(), Some("document"));
    assert_eq!(post.retry_count, Some(2));
    assert_eq!(
        post.supplemental_top_level_data.clone().map(Value::Object),
        Some(json!({"collectionId": "c1"}))
    );
    assert!(
        rest.get.is_none() && rest.put.is_none() && rest.patch.is_none() && rest.delete.is_none()
    );
    let body = post.shape_body(todo().to_record_json().unwrap());
    assert_eq!(body["collectionId"], "c1");
    assert_eq!(body["document"]["title"], "Buy milk");
}

#[test]
fn typed_queries_evaluate_in_memory() {
    let f = Todo::fields();
    let mut a = todo();
    a.id = "a".into();
    a.priority = 5;
    let mut b = todo();
    b.id = "b".into();
    b.priority = 1;
    b.title = "Walk the dog".into();
    b.due = Some("2026-03-01T00:00:00Z".parse().unwrap());
    let mut c = todo();
    c.id = "c".into();
    c.priority = 3;
    c.is_completed = true;

    let q = Query::new().filter(f.priority.gt(2));
    assert!(q.matches(&a) && !q.matches(&b) && q.matches(&c));

    let q = Query::new()
        .filter(f.is_completed.eq(false))
        .filter(f.title.starts_with("Buy").or(f.due.is_not_null()));
    assert!(q.matches(&a) && q.matches(&b) && !q.matches(&c));

    let q = Query::new().filter(
        f.due.lt("2026-03-01T00:00:00.5Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()),
    );
    assert!(q.matches(&b), "timestamps compare as instants");
    assert!(!q.matches(&a), "null never compares");

    let q = Query::new().filter(f.id.in_list(["a", "c"]));
    assert_eq!(q.apply([a.clone(), b.clone(), c.clone()]).len(), 2);

    let sorted = Query::new()
        .order_by(f.is_completed.asc())
        .order_by(f.priority.desc())
        .offset(1)
        .limit(1)
        .apply([a.clone(), b.clone(), c.clone()]);
    assert_eq!(
        sorted.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );

    let q = Query::new()
        .filter(f.title.contains("dog"))
        .filter(f.priority.ne(3));
    assert!(q.matches(&b) && !q.matches(&a));
    let q = Query::new().filter(f.title.ends_with("milk").and(f.due.is_null()));
    assert!(q.matches(&a) && !q.matches(&b));
    let q = Query::new().filter(f.priority.ge(3).and(f.priority.le(3)));
    assert!(q.matches(&c) && !q.matches(&a));
}

#[test]
fn queries_translate_to_url_parameters() {
    let f = Todo::fields();
    let q = Query::new()
        .filter(f.is_completed.eq(false))
        .filter(f.priority.ge(2))
        .filter(f.id.in_list(["a", "b"]))
        .filter(f.due.is_null())
        .order_by(f.priority.desc())
        .order_by(f.title.asc())
        .limit(20)
        .offset(40);
    let params = q.to_query_params().unwrap();
    let expected: Vec<(String, String)> = [
        ("isCompleted", "false"),
        ("priority[ge]", "2"),
        ("id[in]", "a,b"),
        ("due[null]", "true"),
        ("_sort", "-priority,title"),
        ("_limit", "20"),
        ("_offset", "40"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(params, expected);

    let or = Query::new().filter(f.priority.eq(1).or(f.priority.eq(2)));
    assert!(matches!(
        or.to_query_params(),
        Err(Error::UnsupportedQuery { .. })
    ));
}
