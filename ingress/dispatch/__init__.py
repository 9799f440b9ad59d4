"""Attempts over NATS: publishing, failover, relaying frames, replays and lost workers."""
