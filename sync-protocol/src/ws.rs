//! The WebSocket (`GET /ws`): control messages, change events, and requests with their
//! responses.
//!
//! Every message is a JSON text frame. Control messages carry a `type`
//! ([`ClientMessage`], [`ServerMessage`]); change events carry an `event` instead
//! ([`EventMessage`]). Requests use the socket as a transport for the REST calls:
//! a [`WsRequest`] (`"type":"request"`) is answered by a [`WsResponse`] (`"type":"response"`)
//! with the same `id`, the HTTP status and the body the REST endpoint would answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::Record;

/// A control message from a WebSocket client.
///
/// Requests (`"type":"request"`) are [`WsRequest`]s, read before these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Authenticate the connection (when no `Authorization` header was sent).
    Auth {
        /// The bearer token.
        token: String,
    },
    /// Subscribe to or unsubscribe from a collection.
    Subscription {
        /// What to do.
        data: Subscription,
    },
    /// Liveness check; answered by [`ServerMessage::Pong`].
    Ping,
    /// Answer to a server ping; ignored.
    Pong,
    /// A message type this version does not know (read only; its content is dropped).
    #[serde(other)]
    Unknown,
}

impl ClientMessage {
    /// A message that subscribes to `channel` with `parameters` (see [`Subscription::parameters`]).
    #[must_use]
    pub fn subscribe(channel: impl Into<String>, parameters: Map<String, Value>) -> Self {
        Self::Subscription {
            data: Subscription {
                action: SubscriptionAction::Subscribe,
                channel: channel.into(),
                parameters,
            },
        }
    }
}

/// Action of a [`Subscription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    /// Start receiving events of the channel.
    Subscribe,
    /// Stop receiving events of the channel.
    Unsubscribe,
}

/// Payload of a subscription message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Subscribe or unsubscribe.
    pub action: SubscriptionAction,
    /// The collection (a model's endpoint).
    pub channel: String,
    /// What the subscription sends. [`SINCE`](Subscription::SINCE) (`since`) is a version
    /// floor: only changes of a later version produce events (a version as a number, or as
    /// the text a pull's `next_cursor` is; `null` is no floor). Every other parameter is an
    /// equality filter: only records whose top-level field equals the value produce events. A
    /// string parameter also matches a number or boolean with the same text (`"3"` matches
    /// `3`); a parameter naming a field the record lacks matches only `null`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl Subscription {
    /// The parameter that is a version floor, not an equality filter.
    pub const SINCE: &'static str = "since";

    /// The version floor (`since`), if there is one; an error saying why for a value that is
    /// not a version (a time, a fraction, a boolean, an object...).
    pub fn since(&self) -> Result<Option<i64>, String> {
        match self.parameters.get(Self::SINCE) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
            Some(other) => Err(format!(
                "subscription parameter `since` must be a version (the pull cursor: an integer \
                 or its text), not {other}"
            )),
        }
    }

    /// The equality filter: every parameter but `since`.
    pub fn filter(&self) -> Map<String, Value> {
        self.parameters
            .iter()
            .filter(|(name, _)| name.as_str() != Self::SINCE)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

/// A control message from the server (events are [`EventMessage`]s, answers to requests are
/// [`WsResponse`]s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to a ping.
    Pong,
    /// The `auth` message was accepted.
    AuthOk {
        /// The authenticated user.
        user: String,
    },
    /// A subscription is active.
    Subscribed {
        /// The collection.
        channel: String,
        /// The filter in force.
        parameters: Map<String, Value>,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// The collection.
        channel: String,
    },
    /// A client message could not be handled; the connection stays open.
    Error {
        /// What went wrong.
        message: String,
    },
    /// A message type this version does not know (read only; its content is dropped).
    #[serde(other)]
    Unknown,
}

/// Kind of a change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A record was created.
    #[serde(rename = "item_created")]
    Created,
    /// A record was updated (delta or full).
    #[serde(rename = "item_updated")]
    Updated,
    /// A record was deleted; `data` is its tombstone.
    #[serde(rename = "item_deleted")]
    Deleted,
}

impl EventKind {
    /// The wire name of this kind (the `event` of an [`EventMessage`]).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "item_created",
            Self::Updated => "item_updated",
            Self::Deleted => "item_deleted",
        }
    }

    /// The kind with this wire name, if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Created, Self::Updated, Self::Deleted]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// A change event pushed to subscribers after the write committed.
///
/// Clients that also talk to other backends read events by the `event` name through their own
/// mapping, so a name this version does not know is theirs to interpret, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// What happened.
    pub event: EventKind,
    /// The collection.
    pub collection: String,
    /// The record id.
    pub id: String,
    /// The record's version after the change.
    pub version: i64,
    /// The record after the change (a tombstone for deletes).
    pub data: Record,
}

/// The id of a [`WsRequest`], echoed verbatim in its [`WsResponse`]: a JSON number or string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A number (kept as written).
    Number(Number),
    /// A string.
    Text(String),
}

impl RequestId {
    /// The id as an unsigned integer, when it is one.
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(n) => n.as_u64(),
            Self::Text(_) => None,
        }
    }

    /// The id of a request message (its `id`), when it is a number or a string.
    #[must_use]
    pub fn of(message: &Map<String, Value>) -> Option<Self> {
        match message.get("id")? {
            Value::Number(n) => Some(Self::Number(n.clone())),
            Value::String(s) => Some(Self::Text(s.clone())),
            _ => None,
        }
    }
}

impl From<u64> for RequestId {
    fn from(id: u64) -> Self {
        Self::Number(id.into())
    }
}

/// Method of a [`WsRequest`]; each one answers what its REST endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsMethod {
    /// `POST /sync/push`; the body is a [`PushRequest`](crate::PushRequest).
    Push,
    /// `GET /{collection}?since=&limit=`; the body is a [`PullRequestBody`].
    Pull,
    /// `GET /{collection}/{id}`; the body is a [`GetRequestBody`].
    Get,
    /// `GET /{collection}?field=value..`; the body is a [`QueryRequestBody`].
    Query,
    /// `GET /health`; the body is ignored.
    Health,
}

impl WsMethod {
    /// Every method.
    pub const ALL: [WsMethod; 5] = [Self::Push, Self::Pull, Self::Get, Self::Query, Self::Health];

    /// The wire name of this method.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Get => "get",
            Self::Query => "query",
            Self::Health => "health",
        }
    }

    /// The method with this wire name, if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A request over the WebSocket: `{"type":"request","id":N,"method":M,"body":{...}}`.
///
/// `B` is the body's type: any JSON by default; a client may serialise a typed body straight
/// into the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "request")]
pub struct WsRequest<B = Value> {
    /// Echoed in the response.
    pub id: RequestId,
    /// What to do.
    pub method: WsMethod,
    /// The method's input (`null` when absent; a typed `B` must implement `Default` to be read).
    #[serde(default)]
    pub body: B,
}

impl WsRequest {
    /// The `type` of a request message.
    pub const TYPE: &'static str = "request";
}

/// The answer to a [`WsRequest`]: `{"type":"response","id":N,"status":S,"body":{...}}`, where
/// `S` and the body are what the REST endpoint of the method answers (an [`ErrorBody`] for
/// errors).
///
/// [`ErrorBody`]: crate::ErrorBody
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "response")]
pub struct WsResponse<B = Value> {
    /// The request's id.
    pub id: RequestId,
    /// HTTP status semantics.
    pub status: u16,
    /// The REST endpoint's body (`null` when it has none; always present).
    pub body: B,
}

impl WsResponse {
    /// The `type` of a response message.
    pub const TYPE: &'static str = "response";
}

/// Body of a `pull` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequestBody {
    /// The collection.
    pub collection: String,
    /// The cursor (`null`: from the start).
    #[serde(default)]
    pub since: Option<String>,
    /// Page size (`null`: the server's default).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Equality filters, as in a query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

/// Body of a `query` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequestBody {
    /// The collection.
    pub collection: String,
    /// Equality filters (values are strings, numbers or booleans, compared as text).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Page size (`null`: the server's default).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Records skipped (`null`: none).
    #[serde(default)]
    pub offset: Option<u64>,
}

/// Body of a `get` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequestBody {
    /// The collection.
    pub collection: String,
    /// The record id.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn client_messages_round_trip() {
        for (message, expected) in [
            (
                ClientMessage::Auth { token: "t".into() },
                json!({"type": "auth", "token": "t"}),
            ),
            (
                ClientMessage::subscribe("todos", object(json!({"done": "false"}))),
                json!({"type": "subscription", "data": {"action": "subscribe", "channel": "todos", "parameters": {"done": "false"}}}),
            ),
            (ClientMessage::Ping, json!({"type": "ping"})),
            (ClientMessage::Pong, json!({"type": "pong"})),
        ] {
            assert_eq!(
                serde_json::to_value(&message).expect("serialises"),
                expected
            );
            let back: ClientMessage = serde_json::from_value(expected).expect("parses");
            assert_eq!(back, message);
        }
        assert_eq!(
            serde_json::to_string(&ClientMessage::Ping).expect("serialises"),
            r#"{"type":"ping"}"#
        );
        // Parameters may be left out.
        let message: ClientMessage = serde_json::from_value(
            json!({"type": "subscription", "data": {"action": "unsubscribe", "channel": "todos"}}),
        )
        .expect("parses");
        assert!(matches!(
            message,
            ClientMessage::Subscription { data } if data.parameters.is_empty()
                && data.action == SubscriptionAction::Unsubscribe
        ));
    }

    #[test]
    fn since_is_a_version_floor_apart_from_the_filter() {
        let subscription = |parameters: Value| Subscription {
            action: SubscriptionAction::Subscribe,
            channel: "todos".into(),
            parameters: object(parameters),
        };
        for (parameters, since) in [
            (json!({}), None),
            (json!({"since": null}), None),
            (json!({"since": 42}), Some(42)),
            (json!({"since": "42"}), Some(42)),
            (json!({"since": -1}), Some(-1)),
        ] {
            assert_eq!(
                subscription(parameters.clone()).since(),
                Ok(since),
                "{parameters}"
            );
        }
        for bad in [
            json!("2024-01-01T00:00:00Z"),
            json!(1.5),
            json!(true),
            json!({"v": 1}),
            json!(u64::MAX),
        ] {
            let error = subscription(json!({ "since": bad }))
                .since()
                .expect_err("not a version");
            assert!(error.contains("since"), "{error}");
        }
        let filter = subscription(json!({"since": "3", "status": "open", "user_id": "u"})).filter();
        assert_eq!(
            Value::Object(filter),
            json!({"status": "open", "user_id": "u"})
        );
    }

    #[test]
    fn unknown_message_types_fall_back() {
        let client: ClientMessage =
            serde_json::from_value(json!({"type": "resume", "from": 4})).expect("parses");
        assert_eq!(client, ClientMessage::Unknown);
        let server: ServerMessage =
            serde_json::from_value(json!({"type": "server_shutdown", "in": 5})).expect("parses");
        assert_eq!(server, ServerMessage::Unknown);
        // A known type with a malformed payload is still an error.
        assert!(serde_json::from_value::<ClientMessage>(json!({"type": "auth"})).is_err());
        assert!(serde_json::from_value::<ClientMessage>(json!({"token": "t"})).is_err());
    }

    #[test]
    fn server_messages_match_what_the_server_sends() {
        for (message, text) in [
            (ServerMessage::Pong, r#"{"type":"pong"}"#),
            (
                ServerMessage::AuthOk {
                    user: "alice".into(),
                },
                r#"{"type":"auth_ok","user":"alice"}"#,
            ),
            (
                ServerMessage::Subscribed {
                    channel: "todos".into(),
                    parameters: Map::new(),
                },
                r#"{"type":"subscribed","channel":"todos","parameters":{}}"#,
            ),
            (
                ServerMessage::Unsubscribed {
                    channel: "todos".into(),
                },
                r#"{"type":"unsubscribed","channel":"todos"}"#,
            ),
            (
                ServerMessage::Error {
                    message: "no".into(),
                },
                r#"{"type":"error","message":"no"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&message).expect("serialises"), text);
            let back: ServerMessage = serde_json::from_str(text).expect("parses");
            assert_eq!(back, message);
        }
    }

    #[test]
    fn event_shape() {
        let event = EventMessage {
            event: EventKind::Deleted,
            collection: "todos".into(),
            id: "t1".into(),
            version: 7,
            data: object(json!({"id": "t1", "deleted": true})),
        };
        assert_eq!(
            serde_json::to_string(&event).expect("serialises"),
            r#"{"event":"item_deleted","collection":"todos","id":"t1","version":7,"data":{"deleted":true,"id":"t1"}}"#
        );
        for kind in [EventKind::Created, EventKind::Updated, EventKind::Deleted] {
            assert_eq!(
                serde_json::to_value(kind).expect("serialises"),
                json!(kind.as_str())
            );
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::from_name("item_moved"), None);
    }

    #[test]
    fn request_envelope() {
        let request = WsRequest {
            id: RequestId::from(3),
            method: WsMethod::Pull,
            body: PullRequestBody {
                collection: "todos".into(),
                since: None,
                limit: Some(100),
                params: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&request).expect("serialises"),
            r#"{"type":"request","id":3,"method":"pull","body":{"collection":"todos","since":null,"limit":100}}"#
        );
        let back: WsRequest =
            serde_json::from_str(&serde_json::to_string(&request).expect("serialises"))
                .expect("parses");
        assert_eq!((&back.id, back.method), (&request.id, request.method));
        let body: PullRequestBody = serde_json::from_value(back.body).expect("parses");
        assert_eq!(body, request.body);
        let health: WsRequest =
            serde_json::from_str(r#"{"type":"request","id":"abc","method":"health"}"#)
                .expect("parses");
        assert_eq!(health.id, RequestId::Text("abc".into()));
        assert_eq!(health.body, Value::Null);
        for method in WsMethod::ALL {
            assert_eq!(
                serde_json::to_value(method).expect("serialises"),
                json!(method.as_str())
            );
            assert_eq!(WsMethod::from_name(method.as_str()), Some(method));
        }
        assert_eq!(WsMethod::from_name("dance"), None);
    }

    #[test]
    fn request_bodies() {
        let query = QueryRequestBody {
            collection: "todos".into(),
            params: object(json!({"done": "true"})),
            limit: None,
            offset: Some(5),
        };
        assert_eq!(
            serde_json::to_value(&query).expect("serialises"),
            json!({"collection": "todos", "params": {"done": "true"}, "limit": null, "offset": 5})
        );
        let get = GetRequestBody {
            collection: "todos".into(),
            id: "t1".into(),
        };
        assert_eq!(
            serde_json::to_string(&get).expect("serialises"),
            r#"{"collection":"todos","id":"t1"}"#
        );
    }

    #[test]
    fn response_envelope() {
        // What sync-server writes, with the body as it came from the REST function.
        let text =
            r#"{"type":"response","id":7,"status":404,"body":{"error":"gone","code":"not_found"}}"#;
        let response: WsResponse = serde_json::from_str(text).expect("parses");
        assert_eq!(response.id.as_u64(), Some(7));
        assert_eq!(response.status, 404);
        let body: crate::ErrorBody = serde_json::from_value(response.body.clone()).expect("parses");
        assert_eq!(body.code, crate::ErrorCode::NotFound);
        let written = serde_json::to_string(&response).expect("serialises");
        assert!(
            written.starts_with(r#"{"type":"response","id":7,"status":404,"body":{"#),
            "{written}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&written).expect("parses"),
            serde_json::from_str::<Value>(text).expect("parses")
        );
        // A response is not a control message.
        assert_eq!(
            serde_json::from_str::<ServerMessage>(text).expect("parses"),
            ServerMessage::Unknown
        );
        assert!(serde_json::from_str::<WsResponse>(r#"{"type":"response","id":7}"#).is_err());
        let ids = object(json!({"id": 12345678901234567890u64}));
        assert_eq!(
            RequestId::of(&ids).and_then(|id| id.as_u64()),
            Some(12345678901234567890)
        );
        assert_eq!(RequestId::of(&object(json!({"id": [1]}))), None);
        assert_eq!(
            RequestId::of(&object(json!({"id": "x"}))),
            Some(RequestId::Text("x".into()))
        );
    }
}
