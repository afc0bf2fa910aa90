//! Change events: the in-process hub that WebSocket connections listen to, and the NOTIFY
//! payloads that carry events between instances on one Postgres database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::protocol::{EventKind, EventMessage, Record};

/// Events of one user a slow WebSocket connection may fall behind by before it is told it
/// missed some. Each user with a connection has a channel of this many slots.
const HUB_CAPACITY: usize = 1024;

/// Largest NOTIFY payload we send (Postgres' limit is 8000 bytes).
pub(crate) const MAX_NOTIFY_PAYLOAD: usize = 7800;

/// A committed change, addressed to the owner of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChangeEvent {
    /// Only connections of this user receive the event.
    pub(crate) owner: String,
    /// The WebSocket connection whose request made the change, if any: it is not sent its own
    /// change back (its response carries the record). Local to this instance.
    #[serde(skip)]
    pub(crate) origin: Option<u64>,
    /// What is sent to them.
    pub(crate) message: EventMessage,
}

impl ChangeEvent {
    pub(crate) fn new(
        owner: &str,
        kind: EventKind,
        collection: &str,
        id: &str,
        version: i64,
        data: Record,
    ) -> Self {
        Self {
            owner: owner.to_owned(),
            origin: None,
            message: EventMessage {
                event: kind,
                collection: collection.to_owned(),
                id: id.to_owned(),
                version,
                data,
            },
        }
    }
}

/// An event as the hub sends it: serialised once, shared by every connection that sends it.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) event: ChangeEvent,
    /// The JSON text of `event.message`.
    pub(crate) text: Utf8Bytes,
}

/// Fan-out of committed events to this instance's WebSocket connections: one channel per
/// user, so an event wakes only the connections of its owner, however many other users are
/// connected (with one channel for all, every event woke every connection).
#[derive(Debug, Clone, Default)]
pub(crate) struct Hub {
    users: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Published>>>>>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn users(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<Published>>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any connection listens (events need not be built otherwise). A user whose
    /// connections all closed keeps its entry until an event of theirs finds nobody.
    pub(crate) fn has_listeners(&self) -> bool {
        !self.users().is_empty()
    }

    /// The events of `user` from now on.
    pub(crate) fn subscribe(&self, user: &str) -> broadcast::Receiver<Arc<Published>> {
        let mut users = self.users();
        match users.get(user) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(HUB_CAPACITY);
                users.insert(user.to_owned(), tx);
                rx
            }
        }
    }

    /// Sends committed events; call only after the transaction that made them committed.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = ChangeEvent>) {
        for event in events {
            let text = match serde_json::to_string(&event.message) {
                Ok(text) => Utf8Bytes::from(text),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot encode an event");
                    continue;
                }
            };
            let mut users = self.users();
            let Some(tx) = users.get(&event.owner) else {
                continue;
            };
            // An error means nobody of this user listens any more.
            let owner = event.owner.clone();
            if tx.send(Arc::new(Published { event, text })).is_err() {
                users.remove(&owner);
            }
        }
    }
}

/// Reference to an event too large for a NOTIFY payload; the listener reads the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventRef {
    pub(crate) owner: String,
    pub(crate) kind: EventKind,
    pub(crate) collection: String,
    pub(crate) id: String,
    pub(crate) version: i64,
}

/// One NOTIFY payload: events of one transaction from one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NotifyPayload {
    /// Sending instance; it skips its own payloads (it already published them).
    #[serde(rename = "i")]
    pub(crate) instance: String,
    /// Events carried whole.
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) events: Vec<ChangeEvent>,
    /// Events too large to carry.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) refs: Vec<EventRef>,
}

impl NotifyPayload {
    /// Packs events, in order, into payloads under [`MAX_NOTIFY_PAYLOAD`] bytes.
    pub(crate) fn pack(instance: &str, events: &[RawEvent]) -> Vec<String> {
        // `{"i":"<instance>","e":[` + `]}`
        let overhead = instance.len() + 16;
        let mut out = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut size = overhead;
        let flush = |current: &mut Vec<String>, out: &mut Vec<String>| {
            if !current.is_empty() {
                out.push(format!(
                    "{{\"i\":{},\"e\":[{}]}}",
                    json_string(instance),
                    current.join(",")
                ));
                current.clear();
            }
        };
        for event in events {
            let text = event.to_json();
            if text.len() + overhead + 1 > MAX_NOTIFY_PAYLOAD {
                flush(&mut current, &mut out);
                size = overhead;
                let reference = NotifyPayload {
                    instance: instance.to_owned(),
                    events: Vec::new(),
                    refs: vec![EventRef {
                        owner: event.owner.clone(),
                        kind: event.kind,
                        collection: event.collection.clone(),
                        id: event.id.clone(),
                        version: event.version,
                    }],
                };
                if let Ok(text) = serde_json::to_string(&reference) {
                    out.push(text);
                }
                continue;
            }
            if size + text.len() + 1 > MAX_NOTIFY_PAYLOAD {
                flush(&mut current, &mut out);
                size = overhead;
            }
            size += text.len() + 1;
            current.push(text);
        }
        flush(&mut current, &mut out);
        out
    }
}

/// A change as a write produces it, with the record kept as the JSON text of the write's
/// result: the NOTIFY payloads are written from it without parsing the record, and it becomes
/// a [`ChangeEvent`] only when a connection of this instance listens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEvent {
    pub(crate) owner: String,
    pub(crate) kind: EventKind,
    pub(crate) collection: String,
    pub(crate) id: String,
    pub(crate) version: i64,
    /// The record after the change, as JSON text written by this server.
    pub(crate) record: String,
}

impl RawEvent {
    /// The JSON of the equivalent [`ChangeEvent`].
    fn to_json(&self) -> String {
        let kind = self.kind.as_str();
        let mut out = String::with_capacity(self.record.len() + 128);
        out.push_str("{\"owner\":");
        out.push_str(&json_string(&self.owner));
        out.push_str(",\"message\":{\"event\":\"");
        out.push_str(kind);
        out.push_str("\",\"collection\":");
        out.push_str(&json_string(&self.collection));
        out.push_str(",\"id\":");
        out.push_str(&json_string(&self.id));
        out.push_str(",\"version\":");
        out.push_str(&self.version.to_string());
        out.push_str(",\"data\":");
        out.push_str(&self.record);
        out.push_str("}}");
        out
    }

    /// The event for this instance's connections.
    pub(crate) fn into_change_event(self) -> serde_json::Result<ChangeEvent> {
        let data: Record = serde_json::from_str(&self.record)?;
        Ok(ChangeEvent::new(
            &self.owner,
            self.kind,
            &self.collection,
            &self.id,
            self.version,
            data,
        ))
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64, size: usize) -> RawEvent {
        RawEvent {
            owner: "u".into(),
            kind: EventKind::Created,
            collection: "todos".into(),
            id: n.to_string(),
            version: n,
            record: format!("{{\"id\":\"{n}\",\"blob\":\"{}\"}}", "x".repeat(size)),
        }
    }

    #[test]
    fn raw_events_serialise_like_change_events() {
        let raw = RawEvent {
            owner: "u\"1".into(),
            kind: EventKind::Deleted,
            collection: "todos".into(),
            id: "a\\b".into(),
            version: 7,
            record: r#"{"id":"a\\b","version":7,"deleted":true,"n":[1,2]}"#.into(),
        };
        let text = raw.to_json();
        let parsed: ChangeEvent = serde_json::from_str(&text).expect("event parses");
        let event = raw.into_change_event().expect("record parses");
        assert_eq!(parsed, event);
    }

    #[test]
    fn packs_in_order_under_the_limit() {
        let events: Vec<_> = (1..=100).map(|n| event(n, 300)).collect();
        let payloads = NotifyPayload::pack("inst", &events);
        assert!(payloads.len() > 1);
        let mut versions = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_NOTIFY_PAYLOAD, "{}", p.len());
            let parsed: NotifyPayload = serde_json::from_str(p).expect("payload parses");
            assert_eq!(parsed.instance, "inst");
            versions.extend(parsed.events.iter().map(|e| e.message.version));
        }
        assert_eq!(versions, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn oversized_events_become_references() {
        let events = vec![event(1, 10), event(2, 20_000), event(3, 10)];
        let payloads = NotifyPayload::pack("inst", &events);
        let parsed: Vec<NotifyPayload> = payloads
            .iter()
            .map(|p| serde_json::from_str(p).expect("payload parses"))
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].events[0].message.version, 1);
        assert_eq!(parsed[1].refs[0].version, 2);
        assert_eq!(parsed[2].events[0].message.version, 3);
    }
}
