-- One row per usage event: one upstream call, or one request answered at the ingress.
--
-- Plain MergeTree, not ReplacingMergeTree. ReplacingMergeTree only drops duplicates at
-- merge time, so exact totals would need FINAL or argMax(..) GROUP BY event_id in every
-- query, and the materialized-view rollup below would still count a duplicate twice.
-- Instead duplicates never get in:
--   * a retried batch (same rows, same insert_deduplication_token) is dropped by block
--     deduplication, which plain MergeTree only does with non_replicated_deduplication_window;
--   * a re-delivered event in a different batch is dropped by the consumer, which inserts
--     only the event ids not yet present (one indexed lookup per batch).
-- So every query, and the rollup, can sum the table as it is.
--
-- Optional names are '' rather than Nullable (cheaper, and groupable); cost, saved_cost and
-- ttft_ms stay Nullable because "unknown" and 0 mean different things there.
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id            String,
    request_id          String,
    attempt             UInt16,
    ts                  DateTime64(3, 'UTC'),
    key_id              LowCardinality(String),
    team_id             LowCardinality(String),
    end_user            String,
    model_alias         LowCardinality(String),
    provider            LowCardinality(String),
    deployment_id       LowCardinality(String),
    upstream_model      LowCardinality(String),
    endpoint            LowCardinality(String),
    streamed            Bool,
    status              LowCardinality(String),
    error_type          LowCardinality(String),
    http_status         UInt16,
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    cached_tokens       UInt32,
    cache_write_tokens  UInt32,
    reasoning_tokens    UInt32,
    cost                Nullable(Decimal(18, 9)),
    saved_cost          Nullable(Decimal(18, 9)),
    price_version       LowCardinality(String),
    latency_ms          Float64,
    ttft_ms             Nullable(Float64),
    batch_id            String,
    metadata            Map(String, String),
    schema_version      UInt8,
    -- The consumer's "which of these ids are already here" lookup and request lookups.
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
-- Every analytics query is a time range, often narrowed to a team or key.
ORDER BY (toDate(ts), team_id, key_id, model_alias, ts)
-- The default retention; the accounting service applies AIGW_USAGE_TTL_DAYS at start-up.
TTL toDateTime(ts) + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 10000;
