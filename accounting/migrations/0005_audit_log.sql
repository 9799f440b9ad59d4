-- The audit log (schemas/audit.py): one row per admin action, append-only, kept without a
-- TTL. ReplacingMergeTree on the event id (ts comes from the event, so a re-delivered
-- event has the same sorting key) merges away a duplicate that slipped past the
-- consumer's own check of the ids already stored; queries read it with FINAL.
-- changes is the JSON of {field: {before, after}}, secrets already redacted.
CREATE TABLE IF NOT EXISTS audit_log
(
    event_id        String,
    ts              DateTime64(3, 'UTC'),
    actor           String,
    actor_kind      LowCardinality(String),
    actor_team_id   String DEFAULT '',
    action          LowCardinality(String),
    target_kind     LowCardinality(String),
    target_id       String,
    changes         String DEFAULT '{}',
    source_ip       String DEFAULT '',
    request_id      String,
    schema_version  UInt8 DEFAULT 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id)
