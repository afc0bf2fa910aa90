//! Diesel table definitions (see `migrations/`).

diesel::table! {
    sync_records (owner, collection, id) {
        owner -> Text,
        collection -> Text,
        id -> Text,
        data -> Text,
        version -> BigInt,
        updated_at -> Text,
        deleted -> Bool,
        idem_key -> Nullable<Text>,
        idem_op -> Nullable<Text>,
    }
}

diesel::table! {
    sync_idempotency (owner, idem_key) {
        owner -> Text,
        idem_key -> Text,
        collection -> Text,
        op -> Text,
        record_id -> Text,
        result -> Text,
        created_at -> Text,
        record_version -> Nullable<BigInt>,
    }
}

diesel::table! {
    sync_sequence (id) {
        id -> Integer,
        head_version -> BigInt,
    }
}

diesel::table! {
    sync_usage (owner, collection) {
        owner -> Text,
        collection -> Text,
        records -> BigInt,
        bytes -> BigInt,
        total -> Nullable<BigInt>,
        checksum_lo -> Nullable<BigInt>,
        checksum_hi -> Nullable<BigInt>,
    }
}

diesel::table! {
    sync_devices (owner, device_id) {
        owner -> Text,
        device_id -> Text,
        first_seen -> Text,
        last_seen -> Text,
        last_successful_sync -> Nullable<Text>,
    }
}
