DROP TABLE sync_usage;
