//! Every container and field attribute of `#[derive(SyncModel)]`, and every
//! type of the column type map.

use std::time::Duration;

use offline_sync_kit::prelude::*;
use offline_sync_kit::{Error, SqlType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

fn unwrap_documents(body: Value) -> Value {
    body.get("documents").cloned().unwrap_or(body)
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Address {
    pub street: String,
    pub zip: u32,
}

/// Every supported type, plain and optional, with a `uuid::Uuid` id.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(
    model_type = "sample",
    endpoint = "samples",
    priority = 7,
    rest(
        get(
            url = "databases/{db}/collections/samples/documents",
            url_parameters(db = "main"),
            supplemental = r#"{"tenant": "t1", "active": true, "limit": 3}"#,
            response_data_key = "data.items",
            response_transformer = "unwrap_documents",
            timeout_ms = 1500
        ),
        post(
            top_level_key = "document",
            supplemental = r#"{"documentId":"unique()"}"#,
            header = "X-Appwrite-Project: p1",
            header = "X-Trace: on"
        ),
        put(url = "https://other.example/v2/samples", retry_count = 0),
        patch(retry_count = 5, send_as = "put"),
        delete(url = "trash/{id}")
    )
)]
pub struct Sample {
    #[sync(id)]
    pub uid: uuid::Uuid,
    pub text: String,
    pub flag: bool,
    pub small: i16,
    pub int: i32,
    #[sync(index, column = "big_number")]
    pub big: i64,
    pub single: f32,
    pub double: f64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub naive: chrono::NaiveDateTime,
    pub other_id: uuid::Uuid,
    pub bytes: Vec<u8>,
    pub maybe_text: Option<String>,
    pub maybe_flag: Option<bool>,
    pub maybe_small: Option<i16>,
    pub maybe_int: Option<i32>,
    pub maybe_big: Option<i64>,
    pub maybe_single: Option<f32>,
    pub maybe_double: Option<f64>,
    pub maybe_at: Option<chrono::DateTime<chrono::Utc>>,
    pub maybe_naive: Option<chrono::NaiveDateTime>,
    pub maybe_uuid: Option<uuid::Uuid>,
    pub maybe_bytes: Option<Vec<u8>>,
    #[sync(json)]
    pub address: Address,
    #[sync(json)]
    pub maybe_address: Option<Address>,
    #[sync(skip)]
    #[serde(skip)]
    pub cache: Vec<u32>,
}

fn sample() -> Sample {
    Sample {
        uid: uuid::Uuid::from_u128(1),
        text: "t".into(),
        flag: true,
        small: 1,
        int: 2,
        big: 3,
        single: 1.5,
        double: 2.5,
        at: "2026-01-01T00:00:00Z".parse().expect("valid timestamp"),
        naive: "2026-01-01T00:00:00".parse().expect("valid timestamp"),
        other_id: uuid::Uuid::from_u128(2),
        bytes: vec![1, 2, 3],
        maybe_text: None,
        maybe_flag: Some(false),
        maybe_small: None,
        maybe_int: Some(7),
        maybe_big: None,
        maybe_single: None,
        maybe_double: Some(0.25),
        maybe_at: None,
        maybe_naive: None,
        maybe_uuid: Some(uuid::Uuid::from_u128(3)),
        maybe_bytes: None,
        address: Address {
            street: "Main".into(),
            zip: 1,
        },
        maybe_address: None,
        cache: vec![9],
    }
}

#[test]
fn every_type_maps_to_its_column_type() {
    let types: Vec<_> = Sample::SCHEMA
        .fields
        .iter()
        .map(|f| (f.name, f.sql_type, f.nullable))
        .collect();
    use SqlType::*;
    assert_eq!(
        types,
        [
            ("uid", Uuid, false),
            ("text", Text, false),
            ("flag", Bool, false),
            ("small", SmallInt, false),
            ("int", Integer, false),
            ("big", BigInt, false),
            ("single", Float, false),
            ("double", Double, false),
            ("at", Timestamp, false),
            ("naive", NaiveTimestamp, false),
            ("other_id", Uuid, false),
            ("bytes", Binary, false),
            ("maybe_text", Text, true),
            ("maybe_flag", Bool, true),
            ("maybe_small", SmallInt, true),
            ("maybe_int", Integer, true),
            ("maybe_big", BigInt, true),
            ("maybe_single", Float, true),
            ("maybe_double", Double, true),
            ("maybe_at", Timestamp, true),
            ("maybe_naive", NaiveTimestamp, true),
            ("maybe_uuid", Uuid, true),
            ("maybe_bytes", Binary, true),
            ("address", Json, false),
            ("maybe_address", Json, true),
        ]
    );
    assert_eq!(Sample::MODEL_TYPE, "sample");
    assert_eq!(
        Sample::SCHEMA.table,
        "samples",
        "table defaults to the endpoint"
    );
    let big = Sample::SCHEMA.field_by_name("big").unwrap();
    assert_eq!(big.column, "big_number");
    assert!(big.index);
    assert!(
        Sample::SCHEMA.field_by_name("cache").is_none(),
        "skip fields are not stored"
    );
}

#[test]
fn uuid_ids_and_every_type_round_trip_through_a_delta() {
    let before = sample();
    assert_eq!(before.id(), "00000000-0000-0000-0000-000000000001");
    let mut after = before.clone();
    after.bytes = vec![];
    after.maybe_at = Some("2026-02-02T10:00:00.5Z".parse().unwrap());
    after.naive = "2027-01-01T12:00:00".parse().unwrap();
    after.address.zip = 2;
    after.maybe_address = Some(Address::default());
    after.maybe_double = None;
    after.cache = vec![];
    let mask = after.changed_fields(&before);
    assert_eq!(
        mask.wire_names(Sample::SCHEMA),
        [
            "naive",
            "bytes",
            "maybe_double",
            "maybe_at",
            "address",
            "maybe_address"
        ],
        "skip fields are not tracked"
    );
    let mut replica = before.clone();
    replica.apply_delta(&after.to_delta_json(mask)).unwrap();
    replica.cache = vec![];
    assert_eq!(replica, after);
}

#[test]
fn record_json_leaves_out_skip_fields_and_deserialises_back() {
    let s = sample();
    let record = s.to_record_json().unwrap();
    assert!(!record.contains_key("cache"));
    assert_eq!(record.len(), Sample::SCHEMA.fields.len());
    let back: Sample = serde_json::from_value(Value::Object(record)).unwrap();
    assert_eq!(back, Sample { cache: vec![], ..s });
}

#[test]
fn all_rest_options_are_generated() {
    let rest = Sample::rest_requests();
    let get = rest.get.as_ref().unwrap();
    assert_eq!(
        get.url.as_deref(),
        Some("databases/{db}/collections/samples/documents")
    );
    assert_eq!(
        get.url_parameters.get("db").map(String::as_str),
        Some("main")
    );
    assert_eq!(get.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(
        get.supplemental_top_level_data,
        json!({"tenant": "t1", "active": true, "limit": 3})
            .as_object()
            .cloned(),
        "a get's supplemental entries are kept (sent as query parameters)"
    );
    assert_eq!(
        get.build_url("http://h/v1", "samples", Some("x"), None)
            .unwrap(),
        "http://h/v1/databases/main/collections/samples/documents/x"
    );
    let extracted = get
        .extract_response(json!({"data": {"items": {"documents": [1]}}}))
        .unwrap();
    assert_eq!(extracted, json!([1]), "data key, then the transformer");

    let post = rest.post.as_ref().unwrap();
    assert_eq!(
        post.headers.get("X-Appwrite-Project").map(String::as_str),
        Some("p1")
    );
    assert_eq!(post.headers.get("X-Trace").map(String::as_str), Some("on"));
    let body = post.shape_body(Map::from_iter([("text".to_owned(), json!("t"))]));
    assert_eq!(
        body,
        json!({"document": {"text": "t"}, "documentId": "unique()"})
    );

    let put = rest.put.as_ref().unwrap();
    assert_eq!(put.retry_count, Some(0));
    assert_eq!(
        put.build_url("http://h", "samples", Some("x"), None)
            .unwrap(),
        "https://other.example/v2/samples/x"
    );
    assert_eq!(rest.patch.as_ref().unwrap().retry_count, Some(5));
    // `send_as` (any case) sends the delta as PUT; the others go as their own method.
    assert_eq!(rest.patch.as_ref().unwrap().send_as, Some(RestMethod::Put));
    assert_eq!(
        rest.resolve(RestMethod::Patch).method_sent(),
        RestMethod::Put
    );
    assert_eq!(
        rest.resolve(RestMethod::Post).method_sent(),
        RestMethod::Post
    );
    assert_eq!(
        rest.delete
            .as_ref()
            .unwrap()
            .build_url("http://h", "samples", Some("x"), None)
            .unwrap(),
        "http://h/trash/x"
    );
}

/// serde renames: per-field `rename`, the container rule, and `skip_delta`.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub struct Renamed {
    #[sync(id)]
    #[serde(rename = "_id")]
    pub key: String,
    pub first_name: String,
    #[serde(rename(serialize = "zip", deserialize = "zip"))]
    pub postal_code: Option<String>,
    #[sync(skip_delta)]
    pub checksum: i64,
}

#[test]
fn wire_names_follow_serde() {
    let names: Vec<_> = Renamed::SCHEMA.fields.iter().map(|f| f.wire_name).collect();
    assert_eq!(names, ["_id", "FIRST-NAME", "zip", "CHECKSUM"]);
    assert_eq!(Renamed::MODEL_TYPE, "renamed");
    assert_eq!(Renamed::ENDPOINT, "renameds");
    let r = Renamed {
        key: "k".into(),
        first_name: "Ann".into(),
        postal_code: Some("123".into()),
        checksum: 1,
    };
    assert_eq!(
        Value::Object(r.to_record_json().unwrap()),
        serde_json::to_value(&r).unwrap()
    );
    let mut changed = r.clone();
    changed.first_name = "Bo".into();
    let delta = changed.to_delta_json(changed.changed_fields(&r));
    assert_eq!(Value::Object(delta.clone()), json!({"FIRST-NAME": "Bo"}));
    let mut replica = r.clone();
    replica.apply_delta(&delta).unwrap();
    assert_eq!(replica, changed);
}

#[test]
fn skip_delta_fields_are_only_sent_in_full_updates() {
    let r = Renamed {
        key: "k".into(),
        first_name: "Ann".into(),
        postal_code: None,
        checksum: 1,
    };
    let mut changed = r.clone();
    changed.checksum = 2;
    let mask = changed.changed_fields(&r);
    assert_eq!(mask.wire_names(Renamed::SCHEMA), ["CHECKSUM"]);
    assert!(Renamed::needs_full_update(mask));
    let delta = changed.to_delta_json(mask);
    assert_eq!(
        Value::Object(delta),
        json!({"_id": "k", "FIRST-NAME": "Ann", "zip": null, "CHECKSUM": 2}),
        "a skip_delta field is never sent alone"
    );
    let mut plain = r.clone();
    plain.postal_code = Some("1".into());
    assert!(!Renamed::needs_full_update(plain.changed_fields(&r)));
}

#[test]
fn field_mask_converts_from_and_to_names() {
    let mask = FieldMask::from_names(Renamed::SCHEMA, ["zip", "first_name"]).unwrap();
    assert_eq!(mask.wire_names(Renamed::SCHEMA), ["FIRST-NAME", "zip"]);
    let err = FieldMask::from_names(Renamed::SCHEMA, ["nope"]).unwrap_err();
    assert!(matches!(err, Error::UnknownField { .. }), "{err}");
}

mod repointed {
    //! `#[sync(crate = "...")]` re-points the generated paths.
    pub(crate) use offline_sync_kit as kit;

    #[derive(kit::SyncModel, serde::Serialize, serde::Deserialize, Clone, Debug)]
    #[sync(crate = "crate::repointed::kit", endpoint = "notes")]
    pub(crate) struct Note {
        #[sync(id)]
        pub(crate) id: String,
    }
}

#[test]
fn crate_attribute_repoints_the_runtime_path() {
    use offline_sync_kit::SyncModel as _;
    assert_eq!(repointed::Note::ENDPOINT, "notes");
    assert_eq!(repointed::Note::MODEL_TYPE, "note");
}

/// A model that puts its changes behind the default.
#[derive(SyncModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[sync(priority = -2)]
pub struct Background {
    #[sync(id)]
    pub id: String,
}

#[test]
fn priority_sets_the_models_queue_priority() {
    assert_eq!(<Sample as SyncModel>::PRIORITY, 7);
    assert_eq!(<Background as SyncModel>::PRIORITY, -2);
    assert_eq!(<Renamed as SyncModel>::PRIORITY, 0, "the default");
}
