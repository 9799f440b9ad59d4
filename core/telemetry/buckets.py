"""Histogram buckets, as the OpenTelemetry GenAI semantic conventions advise them."""

from __future__ import annotations

# Seconds, for a whole operation (gen_ai.client.operation.duration).
DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
            40.96, 81.92, 163.84, 327.68)
# Seconds, to the first token of a stream (gen_ai.server.time_to_first_token).
FIRST_TOKEN = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
               5.0, 7.5, 10.0)
# Tokens per call (gen_ai.client.token.usage).
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
          16777216, 67108864)
# Seconds, for short internal waits and inserts.
SHORT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
