//! Conversions between a field's JSON (what serde writes for its Rust type)
//! and the values bound to or read from its column.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::sqlite::{Sqlite, SqliteType};
use diesel_dynamic_schema::dynamic_value::Any;
use serde_json::Value;
use sync_schema::{FieldSpec, SqlType};

use crate::ddl::Backend;

/// A value bound to a statement, typed for the column it goes to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Bool(Option<bool>),
    I16(Option<i16>),
    I32(Option<i32>),
    I64(Option<i64>),
    F32(Option<f32>),
    F64(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    /// Postgres only (SQLite stores timestamps as text).
    Timestamptz(Option<DateTime<Utc>>),
    /// Postgres only.
    Timestamp(Option<NaiveDateTime>),
    /// Postgres only.
    Uuid(Option<uuid::Uuid>),
}

impl Param {
    pub(crate) fn text(value: impl Into<String>) -> Param {
        Param::Text(Some(value.into()))
    }
}

/// A value read from a result column, before it is interpreted by the field's type.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Raw {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Uuid(uuid::Uuid),
}

impl Raw {
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Raw::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Raw::Bool(b) => Some(*b),
            Raw::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    pub(crate) fn into_text(self) -> Option<String> {
        match self {
            Raw::Text(s) => Some(s),
            Raw::Uuid(u) => Some(u.to_string()),
            _ => None,
        }
    }

    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Raw::Null => "NULL",
            Raw::Int(_) => "an integer",
            Raw::Float(_) => "a float",
            Raw::Text(_) => "text",
            Raw::Blob(_) => "a blob",
            Raw::Bool(_) => "a boolean",
            Raw::Timestamptz(_) | Raw::Timestamp(_) => "a timestamp",
            Raw::Uuid(_) => "a uuid",
        }
    }
}

impl FromSql<Any, Sqlite> for Raw {
    fn from_sql(
        value: <Sqlite as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        let mut value = value;
        Ok(match value.value_type() {
            None => Raw::Null,
            Some(SqliteType::Double | SqliteType::Float) => Raw::Float(value.read_double()),
            Some(SqliteType::Binary) => Raw::Blob(value.read_blob().to_vec()),
            Some(SqliteType::Text) => Raw::Text(value.read_text().to_owned()),
            Some(_) => Raw::Int(value.read_long()),
        })
    }

    fn from_nullable_sql(
        bytes: Option<<Sqlite as diesel::backend::Backend>::RawValue<'_>>,
    ) -> deserialize::Result<Self> {
        match bytes {
            None => Ok(Raw::Null),
            Some(value) => <Raw as FromSql<Any, Sqlite>>::from_sql(value),
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use chrono::{DateTime, NaiveDateTime, Utc};
    use diesel::deserialize::{self, FromSql};
    use diesel::pg::{Pg, PgValue};
    use diesel::sql_types;
    use diesel_dynamic_schema::dynamic_value::Any;

    use super::Raw;

    impl FromSql<Any, Pg> for Raw {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            Ok(match value.get_oid().get() {
                16 => Raw::Bool(<bool as FromSql<sql_types::Bool, Pg>>::from_sql(value)?),
                21 => Raw::Int(i64::from(
                    <i16 as FromSql<sql_types::SmallInt, Pg>>::from_sql(value)?,
                )),
                23 => Raw::Int(i64::from(
                    <i32 as FromSql<sql_types::Integer, Pg>>::from_sql(value)?,
                )),
                20 => Raw::Int(<i64 as FromSql<sql_types::BigInt, Pg>>::from_sql(value)?),
                700 => Raw::Float(f64::from(<f32 as FromSql<sql_types::Float, Pg>>::from_sql(
                    value,
                )?)),
                701 => Raw::Float(<f64 as FromSql<sql_types::Double, Pg>>::from_sql(value)?),
                17 => Raw::Blob(<Vec<u8> as FromSql<sql_types::Binary, Pg>>::from_sql(
                    value,
                )?),
                1114 => Raw::Timestamp(
                    <NaiveDateTime as FromSql<sql_types::Timestamp, Pg>>::from_sql(value)?,
                ),
                1184 => Raw::Timestamptz(
                    <DateTime<Utc> as FromSql<sql_types::Timestamptz, Pg>>::from_sql(value)?,
                ),
                2950 => Raw::Uuid(<uuid::Uuid as FromSql<sql_types::Uuid, Pg>>::from_sql(
                    value,
                )?),
                // text, varchar, name, bpchar, json and anything else with a text form
                _ => Raw::Text(<String as FromSql<sql_types::Text, Pg>>::from_sql(value)?),
            })
        }

        fn from_nullable_sql(bytes: Option<PgValue<'_>>) -> deserialize::Result<Self> {
            match bytes {
                None => Ok(Raw::Null),
                Some(value) => <Raw as FromSql<Any, Pg>>::from_sql(value),
            }
        }
    }
}

/// Formats a UTC time as fixed-width text (`2024-05-01T12:00:00.000000000Z`),
/// so that text order is time order. Years outside 0..=9999 have no fixed-width form.
pub(crate) fn format_utc(time: &DateTime<Utc>) -> Result<String, String> {
    let mut out = format_naive(&time.naive_utc())?;
    out.push('Z');
    Ok(out)
}

/// Fixed-width form of a naive time (`2024-05-01T12:00:00.000000000`).
pub(crate) fn format_naive(time: &NaiveDateTime) -> Result<String, String> {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return Err(format!(
            "year {year} is outside 0..=9999, which SQLite text timestamps support"
        ));
    }
    let mut out = String::with_capacity(31);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
        year,
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.nanosecond().min(999_999_999)
    );
    Ok(out)
}

fn parse_utc(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))
}

fn parse_naive(text: &str) -> Result<NaiveDateTime, String> {
    text.parse::<NaiveDateTime>()
        .map_err(|e| format!("{text:?} is not a timestamp without zone: {e}"))
}

/// A local UTC time (bookkeeping columns) as a parameter, kept to the
/// millisecond on both backends.
pub(crate) fn time_param(backend: Backend, time: Option<DateTime<Utc>>) -> Param {
    let time = time.map(|t| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t));
    match backend {
        Backend::Postgres => Param::Timestamptz(time),
        Backend::Sqlite => Param::Text(time.and_then(|t| format_utc(&t).ok())),
    }
}

/// A local UTC time read back.
pub(crate) fn raw_to_time(raw: Raw) -> Result<Option<DateTime<Utc>>, String> {
    match raw {
        Raw::Null => Ok(None),
        Raw::Timestamptz(t) => Ok(Some(t)),
        Raw::Text(text) => parse_utc(&text).map(Some),
        other => Err(format!("expected a timestamp, found {}", other.describe())),
    }
}

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(what: &str, value: &Value) -> String {
    format!("expected {what}, found {}", kind_of(value))
}

fn int_in<T: TryFrom<i64>>(value: &Value, what: &str) -> Result<T, String> {
    let n = value
        .as_i64()
        .ok_or_else(|| expected(&format!("an integer ({what})"), value))?;
    T::try_from(n).map_err(|_| format!("{n} is out of range for {what}"))
}

/// Converts a field's JSON value to the parameter bound to its column.
pub(crate) fn json_to_param(
    field: &FieldSpec,
    value: &Value,
    backend: Backend,
) -> Result<Param, String> {
    let pg = backend == Backend::Postgres;
    if value.is_null() && (field.nullable || field.sql_type != SqlType::Json) {
        if !field.nullable {
            return Err("null for a field that is not an Option".into());
        }
        return Ok(match field.sql_type {
            SqlType::Bool => Param::Bool(None),
            SqlType::SmallInt => Param::I16(None),
            SqlType::Integer => Param::I32(None),
            SqlType::BigInt => Param::I64(None),
            SqlType::Float if pg => Param::F32(None),
            SqlType::Float | SqlType::Double => Param::F64(None),
            SqlType::Timestamp if pg => Param::Timestamptz(None),
            SqlType::NaiveTimestamp if pg => Param::Timestamp(None),
            SqlType::Uuid if pg => Param::Uuid(None),
            SqlType::Binary => Param::Blob(None),
            _ => Param::Text(None),
        });
    }
    Ok(match field.sql_type {
        SqlType::Text => Param::text(value.as_str().ok_or_else(|| expected("a string", value))?),
        SqlType::Bool => Param::Bool(Some(
            value
                .as_bool()
                .ok_or_else(|| expected("a boolean", value))?,
        )),
        SqlType::SmallInt => Param::I16(Some(int_in(value, "i16")?)),
        SqlType::Integer => Param::I32(Some(int_in(value, "i32")?)),
        SqlType::BigInt => Param::I64(Some(int_in(value, "i64")?)),
        SqlType::Float => {
            let f = value.as_f64().ok_or_else(|| expected("a number", value))?;
            #[allow(clippy::cast_possible_truncation)]
            let single = f as f32;
            if pg {
                Param::F32(Some(single))
            } else {
                Param::F64(Some(f64::from(single)))
            }
        }
        SqlType::Double => Param::F64(Some(
            value.as_f64().ok_or_else(|| expected("a number", value))?,
        )),
        SqlType::Timestamp => {
            let text = value
                .as_str()
                .ok_or_else(|| expected("an RFC 3339 timestamp string", value))?;
            let time = parse_utc(text)?;
            if pg {
                Param::Timestamptz(Some(time))
            } else {
                Param::text(format_utc(&time)?)
            }
        }
        SqlType::NaiveTimestamp => {
            let text = value
                .as_str()
                .ok_or_else(|| expected("a timestamp string", value))?;
            let time = parse_naive(text)?;
            if pg {
                Param::Timestamp(Some(time))
            } else {
                Param::text(format_naive(&time)?)
            }
        }
        SqlType::Uuid => {
            let text = value
                .as_str()
                .ok_or_else(|| expected("a UUID string", value))?;
            let id = uuid::Uuid::parse_str(text).map_err(|e| format!("{text:?}: {e}"))?;
            if pg {
                Param::Uuid(Some(id))
            } else {
                Param::text(id.hyphenated().to_string())
            }
        }
        SqlType::Binary => {
            let items = value
                .as_array()
                .ok_or_else(|| expected("an array of bytes", value))?;
            let mut bytes = Vec::with_capacity(items.len());
            for item in items {
                bytes.push(int_in::<u8>(item, "a byte")?);
            }
            Param::Blob(Some(bytes))
        }
        // Json and any later type: the JSON text.
        _ => Param::text(serde_json::to_string(value).map_err(|e| e.to_string())?),
    })
}

/// Converts a column value back to the JSON serde writes for the field's Rust type.
pub(crate) fn raw_to_json(field: &FieldSpec, raw: Raw) -> Result<Value, String> {
    if raw == Raw::Null {
        if field.nullable {
            return Ok(Value::Null);
        }
        return Err("NULL in a column of a field that is not an Option".into());
    }
    let wrong = |raw: &Raw| {
        format!(
            "a {} column holds {}",
            field.sql_type.variant_name(),
            raw.describe()
        )
    };
    match field.sql_type {
        SqlType::Text => match raw {
            Raw::Text(s) => Ok(Value::String(s)),
            other => Err(wrong(&other)),
        },
        SqlType::Bool => match raw {
            Raw::Bool(b) => Ok(Value::Bool(b)),
            Raw::Int(0) => Ok(Value::Bool(false)),
            Raw::Int(1) => Ok(Value::Bool(true)),
            other => Err(wrong(&other)),
        },
        SqlType::SmallInt => match raw {
            Raw::Int(i) => i16::try_from(i)
                .map_err(|_| format!("{i} is out of range for i16"))
                .and_then(to_json),
            other => Err(wrong(&other)),
        },
        SqlType::Integer => match raw {
            Raw::Int(i) => i32::try_from(i)
                .map_err(|_| format!("{i} is out of range for i32"))
                .and_then(to_json),
            other => Err(wrong(&other)),
        },
        SqlType::BigInt => match raw {
            Raw::Int(i) => to_json(i),
            other => Err(wrong(&other)),
        },
        SqlType::Float => match raw {
            #[allow(clippy::cast_possible_truncation)]
            Raw::Float(f) => to_json(f as f32),
            #[allow(clippy::cast_precision_loss)]
            Raw::Int(i) => to_json(i as f32),
            other => Err(wrong(&other)),
        },
        SqlType::Double => match raw {
            Raw::Float(f) => to_json(f),
            #[allow(clippy::cast_precision_loss)]
            Raw::Int(i) => to_json(i as f64),
            other => Err(wrong(&other)),
        },
        SqlType::Timestamp => match raw {
            Raw::Timestamptz(t) => to_json(t),
            Raw::Text(s) => to_json(parse_utc(&s)?),
            other => Err(wrong(&other)),
        },
        SqlType::NaiveTimestamp => match raw {
            Raw::Timestamp(t) => to_json(t),
            Raw::Text(s) => to_json(parse_naive(&s)?),
            other => Err(wrong(&other)),
        },
        SqlType::Uuid => match raw {
            Raw::Uuid(u) => to_json(u),
            Raw::Text(s) => to_json(uuid::Uuid::parse_str(&s).map_err(|e| format!("{s:?}: {e}"))?),
            other => Err(wrong(&other)),
        },
        SqlType::Binary => match raw {
            Raw::Blob(b) => to_json(b),
            other => Err(wrong(&other)),
        },
        _ => match raw {
            Raw::Text(s) => {
                serde_json::from_str(&s).map_err(|e| format!("stored JSON does not parse: {e}"))
            }
            other => Err(wrong(&other)),
        },
    }
}

/// The id of a record as text, from the id column's value.
pub(crate) fn raw_to_id(raw: Raw) -> Option<String> {
    raw.into_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(sql_type: SqlType, nullable: bool) -> FieldSpec {
        FieldSpec {
            position: 0,
            name: "f",
            wire_name: "f",
            column: "f",
            sql_type,
            nullable,
            id: false,
            index: false,
            skip_delta: false,
            has_default: false,
        }
    }

    /// What SQLite hands back for a bound parameter.
    fn sqlite_roundtrip(param: Param) -> Raw {
        match param {
            Param::Bool(Some(b)) => Raw::Int(i64::from(b)),
            Param::I16(Some(i)) => Raw::Int(i64::from(i)),
            Param::I32(Some(i)) => Raw::Int(i64::from(i)),
            Param::I64(Some(i)) => Raw::Int(i),
            Param::F64(Some(f)) => Raw::Float(f),
            Param::Text(Some(s)) => Raw::Text(s),
            Param::Blob(Some(b)) => Raw::Blob(b),
            other => {
                assert!(
                    matches!(
                        other,
                        Param::Bool(None)
                            | Param::I16(None)
                            | Param::I32(None)
                            | Param::I64(None)
                            | Param::F64(None)
                            | Param::Text(None)
                            | Param::Blob(None)
                    ),
                    "SQLite never gets {other:?}"
                );
                Raw::Null
            }
        }
    }

    fn roundtrips<T: serde::Serialize>(sql_type: SqlType, nullable: bool, value: T) {
        let json = serde_json::to_value(&value).unwrap();
        let f = field(sql_type, nullable);
        let param = json_to_param(&f, &json, Backend::Sqlite).unwrap();
        let back = raw_to_json(&f, sqlite_roundtrip(param)).unwrap();
        assert_eq!(back, json, "{sql_type:?}");
    }

    #[test]
    fn every_type_roundtrips_what_serde_writes() {
        roundtrips(SqlType::Text, false, "héllo \"q\"");
        roundtrips(SqlType::Bool, false, true);
        roundtrips(SqlType::Bool, false, false);
        roundtrips(SqlType::SmallInt, false, i16::MIN);
        roundtrips(SqlType::Integer, false, i32::MAX);
        roundtrips(SqlType::BigInt, false, i64::MIN);
        roundtrips(SqlType::Float, false, 0.1_f32);
        roundtrips(SqlType::Float, false, f32::MAX);
        roundtrips(SqlType::Double, false, 0.1_f64);
        roundtrips(SqlType::Double, false, -1e300_f64);
        let at: DateTime<Utc> = "2024-02-29T23:59:59.123456789Z".parse().unwrap();
        roundtrips(SqlType::Timestamp, false, at);
        let whole: DateTime<Utc> = "2024-02-29T23:59:59Z".parse().unwrap();
        roundtrips(SqlType::Timestamp, false, whole);
        let millis: DateTime<Utc> = "2024-02-29T23:59:59.120Z".parse().unwrap();
        roundtrips(SqlType::Timestamp, false, millis);
        let naive: NaiveDateTime = "2024-02-29T23:59:59.5".parse().unwrap();
        roundtrips(SqlType::NaiveTimestamp, false, naive);
        roundtrips(SqlType::Uuid, false, uuid::Uuid::from_u128(0xABCDEF));
        roundtrips(SqlType::Binary, false, vec![0_u8, 1, 255]);
        roundtrips(SqlType::Binary, false, Vec::<u8>::new());
        roundtrips(SqlType::Json, false, vec!["a".to_owned(), "b".to_owned()]);
        roundtrips(
            SqlType::Json,
            false,
            json!({"nested": {"x": [1, 2.5, null]}}),
        );
        roundtrips(SqlType::Json, false, ());
        for ty in SqlType::ALL {
            roundtrips(*ty, true, Option::<i32>::None);
        }
        roundtrips(SqlType::Integer, true, Some(3));
    }

    #[test]
    fn timestamps_are_fixed_width_so_text_order_is_time_order() {
        let times = [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.000000001Z",
            "2024-01-01T00:00:00.1Z",
            "2024-01-01T00:00:01Z",
            "2024-01-01T01:00:00+00:30",
        ];
        let texts: Vec<String> = times
            .iter()
            .map(|t| format_utc(&parse_utc(t).unwrap()).unwrap())
            .collect();
        assert!(texts.iter().all(|t| t.len() == texts[0].len()));
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
        assert_eq!(texts[2], "2024-01-01T00:00:00.100000000Z");
    }

    #[test]
    fn values_that_do_not_fit_are_refused_with_a_reason() {
        let f = field(SqlType::SmallInt, false);
        let err = json_to_param(&f, &json!(70000), Backend::Sqlite).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = json_to_param(&f, &json!("high"), Backend::Sqlite).unwrap_err();
        assert!(err.contains("found a string"), "{err}");
        let err = json_to_param(&f, &Value::Null, Backend::Sqlite).unwrap_err();
        assert!(err.contains("not an Option"), "{err}");
        let ts = field(SqlType::Timestamp, false);
        assert!(json_to_param(&ts, &json!("yesterday"), Backend::Sqlite).is_err());
        let bytes = field(SqlType::Binary, false);
        assert!(json_to_param(&bytes, &json!([1, 256]), Backend::Sqlite).is_err());
        let uid = field(SqlType::Uuid, false);
        assert!(json_to_param(&uid, &json!("not-a-uuid"), Backend::Sqlite).is_err());
    }

    #[test]
    fn unreadable_stored_values_are_errors() {
        let json = field(SqlType::Json, false);
        assert!(raw_to_json(&json, Raw::Text("{oops".into())).is_err());
        let int = field(SqlType::Integer, false);
        assert!(raw_to_json(&int, Raw::Text("x".into())).is_err());
        assert!(raw_to_json(&int, Raw::Null).is_err());
        let small = field(SqlType::SmallInt, false);
        assert!(raw_to_json(&small, Raw::Int(1 << 20)).is_err());
    }
}
