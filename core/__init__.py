"""Shared runtime beneath the roles: NATS buckets, config feed, usage publishing, pricing."""
