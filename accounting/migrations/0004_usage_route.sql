-- The complexity router's decision for each attempt (ingress/routing/complexity.py): the
-- tier it went to, the request's score and why. Empty (and null) for every event whose
-- model group is not routed by complexity, which all earlier rows were.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS route_tier LowCardinality(String) DEFAULT '';
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS route_score Nullable(Float64);
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS route_reason String DEFAULT ''
