"""The objects a process builds to start (its config, the price table, pydantic's schemas,
imported modules) kept out of the cyclic garbage collector's way.

An ingress holds about 130,000 such objects; a full collection walks every one of them, and
measured on this project's machine took 40 to 125 ms, long enough to be a request's p99 on
its own whenever the collector's turn came. :func:`settle` collects once and then freezes
what is left (``gc.freeze``): later collections look only at objects made after, the ones
requests make. Objects freed by reference counting are freed as before (a replaced config
is); only a reference cycle among the frozen objects that became garbage later would stay.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then exempt everything alive from later collections. Call once a process
    has started."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
