"""Client protocols the ingress answers through chat: pure translators, no I/O."""
