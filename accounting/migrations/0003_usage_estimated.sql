-- Whether an event's token counts were estimated by the gateway rather than reported by
-- the provider: a stream cut off before its final usage chunk (see workers/estimate.py).
-- Existing rows were all reported figures, hence the default.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS usage_estimated Bool DEFAULT false
