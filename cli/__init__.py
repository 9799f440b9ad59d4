"""The ``aigw`` command: launches each role, supervises ``aigw up``, and the admin CLI."""
