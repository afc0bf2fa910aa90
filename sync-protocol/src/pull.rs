//! `GET /{collection}?since={cursor}&limit={n}`: one page of changes after a cursor.

use serde::{Deserialize, Serialize};

use crate::Record;

/// One page of a pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// Records with a version greater than the cursor, ordered by version, tombstones included.
    pub items: Vec<Record>,
    /// Cursor to send as `since` for the next page (the version of the last item, as a string;
    /// the request's cursor when the page is empty).
    pub next_cursor: String,
    /// Whether more records follow this page.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_shape_matches_what_the_server_writes() {
        // sync-server writes pages by hand, in this order.
        let text = r#"{"items":[{"id":"t1","title":"milk","version":4,"updated_at":"2025-01-01T10:00:00.000Z"},{"id":"t2","version":5,"updated_at":"2025-01-01T10:00:01.000Z","deleted":true}],"next_cursor":"5","has_more":false}"#;
        let page: PullPage = serde_json::from_str(text).expect("parses");
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, "5");
        assert!(!page.has_more);
        let expected: serde_json::Value = serde_json::from_str(text).expect("parses");
        assert_eq!(serde_json::to_value(&page).expect("serialises"), expected);
        // Top-level keys keep the server's order.
        let written = serde_json::to_string(&page).expect("serialises");
        assert!(written.starts_with(r#"{"items":["#), "{written}");
        assert!(
            written.ends_with(r#"],"next_cursor":"5","has_more":false}"#),
            "{written}"
        );
    }

    #[test]
    fn a_page_needs_its_cursor() {
        assert!(serde_json::from_str::<PullPage>(r#"{"items":[],"has_more":false}"#).is_err());
    }
}
