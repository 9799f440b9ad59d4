"""The HTTP front: authenticate, route, dispatch attempts over NATS, relay the frames."""
