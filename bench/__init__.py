"""Benchmarks, each its own program: ``python -m bench.cpu_cost``, ``python bench/overhead.py``.

They import one another as ``bench.<module>``, one name per file however the program was
started; a program run by its path first puts the repository's root on ``sys.path``.
"""
