"""Usage accounting: prices, the usage stream, and the ClickHouse side.

``pricing`` and ``stream`` are light (workers import them); everything that touches
ClickHouse (``migrations``, ``store``, ``analytics``, ``consumer``, ``service``) runs only
in the ``aigw accounting`` process, the one owner of the ClickHouse store.
"""
