//! The users every test server knows, as `(user id, static bearer token)`.

/// First user.
pub const ALICE: (&str, &str) = ("alice", "alice-secret-token");
/// Second user, to check that users do not see each other's records.
pub const BOB: (&str, &str) = ("bob", "bob-secret-token");
