//! The one failure-disposition table: what a failed push does to the ops it carried, for every
//! transport (batch `/sync/push`, one REST call per change, requests over a WebSocket) and for
//! a whole request as for one change's answer.
//!
//! Settled deliberately:
//! - 401 and 403 are retried with backoff, never failed: credentials are renewed from outside
//!   the engine (a token refresh, the user signing in again), after which the same op succeeds
//!   unchanged; failing it would make the application retry by hand what nothing was wrong with.
//! - 408, 429 and every 5xx are outages: retried, with `Retry-After` as a floor.
//! - Any other 4xx is the server refusing this content for good (malformed, too large, a
//!   missing endpoint): retrying cannot help, so the op fails, kept and visible until the
//!   application calls `retry_failed` or `discard_failed`.
//! - Anything else that is not a success (1xx, an unfollowed 3xx, a code outside HTTP's range)
//!   says nothing about the op: retried.

/// What a failure does to an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Back to the queue with backoff (failed only after `RetryPolicy::max_attempts`).
    Retry,
    /// Failed for good, kept and visible.
    Fail,
}

/// True for the statuses that say the server is out, not that it refused: 408, 429 and every
/// 5xx. Every transport turns these into `RemoteError::Unavailable` (retried, `Retry-After`
/// honoured) and any other non-success into `RemoteError::Refused`, whose fate is then
/// [`Disposition::of_status`].
pub(crate) fn is_outage(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

impl Disposition {
    /// The disposition of an error status (not a success, not a conflict: those are answers).
    pub(crate) fn of_status(status: u16) -> Disposition {
        match status {
            401 | 403 | 408 | 429 => Disposition::Retry,
            400..=499 => Disposition::Fail,
            _ => Disposition::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_outage;
    use super::Disposition::{self, Fail, Retry};

    #[test]
    fn outages() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_outage(status), "HTTP {status}");
        }
        for status in [0, 200, 304, 400, 401, 403, 404, 409, 412, 422, 499, 600] {
            assert!(!is_outage(status), "HTTP {status}");
        }
    }

    #[test]
    fn the_table() {
        let table: &[(u16, Disposition)] = &[
            (400, Fail),
            (401, Retry),
            (402, Fail),
            (403, Retry),
            (404, Fail),
            (405, Fail),
            (408, Retry),
            (410, Fail),
            (412, Fail),
            (413, Fail),
            (422, Fail),
            (429, Retry),
            (451, Fail),
            (499, Fail),
            (500, Retry),
            (502, Retry),
            (503, Retry),
            (504, Retry),
            (599, Retry),
            (100, Retry),
            (304, Retry),
            (0, Retry),
            (700, Retry),
        ];
        for &(status, expected) in table {
            assert_eq!(Disposition::of_status(status), expected, "HTTP {status}");
        }
    }
}
