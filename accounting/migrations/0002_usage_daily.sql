-- Daily rollup per day x key x team x model x provider, fed by a materialized view.
--
-- AggregatingMergeTree because a request is counted once however many attempts it took,
-- and attempts may land in different rows (a fallback to another provider), so requests
-- are a uniqExact state on request_id, exact when re-merged over any grouping. Everything
-- else is a plain sum. Merges are eventual: always re-aggregate at query time
-- (uniqExactMerge(requests), sum(..) GROUP BY ..).
--
-- The MV sees every inserted block. Duplicates cannot reach it: a retried block is dropped
-- for the MV too (deduplicate_blocks_in_dependent_materialized_views, set on every insert,
-- plus a dedup window on this table), and the consumer never inserts an event id that is
-- already in usage_events.
CREATE TABLE IF NOT EXISTS usage_daily
(
    day                 Date,
    key_id              LowCardinality(String),
    team_id             LowCardinality(String),
    model_alias         LowCardinality(String),
    provider            LowCardinality(String),
    requests            AggregateFunction(uniqExact, String),
    events              SimpleAggregateFunction(sum, UInt64),
    ok                  SimpleAggregateFunction(sum, UInt64),
    errors              SimpleAggregateFunction(sum, UInt64),
    cancelled           SimpleAggregateFunction(sum, UInt64),
    cache_hits          SimpleAggregateFunction(sum, UInt64),
    rejected            SimpleAggregateFunction(sum, UInt64),
    prompt_tokens       SimpleAggregateFunction(sum, UInt64),
    completion_tokens   SimpleAggregateFunction(sum, UInt64),
    cached_tokens       SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens  SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens    SimpleAggregateFunction(sum, UInt64),
    cost                SimpleAggregateFunction(sum, Decimal(38, 9)),
    saved_cost          SimpleAggregateFunction(sum, Decimal(38, 9))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, team_id, key_id, model_alias, provider)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    toDate(ts) AS day,
    key_id,
    team_id,
    model_alias,
    provider,
    uniqExactState(request_id) AS requests,
    toUInt64(count()) AS events,
    toUInt64(countIf(status = 'ok')) AS ok,
    toUInt64(countIf(status = 'error')) AS errors,
    toUInt64(countIf(status = 'cancelled')) AS cancelled,
    toUInt64(countIf(status = 'cache_hit')) AS cache_hits,
    toUInt64(countIf(status = 'rejected')) AS rejected,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toUInt64(sum(cached_tokens)) AS cached_tokens,
    toUInt64(sum(cache_write_tokens)) AS cache_write_tokens,
    toUInt64(sum(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sumOrDefault(assumeNotNull(ifNull(cost, 0))), 9) AS cost,
    toDecimal128(sumOrDefault(assumeNotNull(ifNull(saved_cost, 0))), 9) AS saved_cost
FROM usage_events
GROUP BY day, key_id, team_id, model_alias, provider;
