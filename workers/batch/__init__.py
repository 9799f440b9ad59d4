"""Batch items run in a worker beside its interactive subscription (:mod:`.runner`)."""
