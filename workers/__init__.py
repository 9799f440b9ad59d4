"""Provider workers: consume attempts from NATS, call the upstream, stream frames back."""
