"""The wire contract between ingress, workers and accounting.

Nothing in this package imports any other package of ours: it is what every process
agrees on, so it must stay free of their implementation details.
"""
