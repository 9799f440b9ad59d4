"""Which deployment serves an attempt: strategies, load, retries, breakers and health state."""
