//! Throttling of failed authentications per peer address (sync-server README, "Limits and
//! what they protect"): past `max_auth_failures_per_minute` failures in a minute, an address's
//! requests with credentials are answered 429 until that minute ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, expired windows are dropped first and new addresses
/// are not tracked, so the table stays bounded whatever the number of peers.
const MAX_ADDRESSES: usize = 65_536;

/// Failed authentications per peer address.
#[derive(Debug)]
pub(crate) struct AuthThrottle {
    max_failures: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthThrottle {
    pub(crate) fn new(max_failures: u32) -> Self {
        Self {
            max_failures,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// How long `peer` must wait before it may try again, when it is throttled now.
    pub(crate) fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, failures) = windows.get(&peer)?;
        let elapsed = start.elapsed();
        (*failures >= self.max_failures && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    /// Counts one failed authentication of `peer`.
    pub(crate) fn failed(&self, peer: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if !windows.contains_key(&peer) && windows.len() >= MAX_ADDRESSES {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if windows.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let entry = windows.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_others_are_not() {
        let throttle = AuthThrottle::new(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..2 {
            throttle.failed(a);
        }
        assert_eq!(throttle.blocked(a), None);
        throttle.failed(a);
        assert!(throttle.blocked(a).is_some_and(|wait| wait <= WINDOW));
        assert_eq!(throttle.blocked(b), None);
    }
}
