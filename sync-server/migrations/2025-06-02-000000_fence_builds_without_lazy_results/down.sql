ALTER TABLE sync_sequence RENAME COLUMN last_version TO value;
