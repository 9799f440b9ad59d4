"""HTTP routes, one module per resource. Each is mounted with and without ``/v1``."""
