"""Python's cyclic garbage collector, kept from pausing the server for its own start-up heap.

A full collection walks every container object the process tracks: the modules, FastAPI's
routes, pydantic's schemas, numpy's and onnxruntime's bindings, hundreds of thousands of objects
that live as long as the process. Under load the requests' allocations trigger such collections
every few seconds, and each one holds the GIL (every request waits) for as long as the walk
takes: it showed in the tail latency (docs/benchmarks.md, "the garbage collector's pauses").
Frozen once the app is built, before its models load (`easerve serve`, each HTTP worker and the
model process of `--http-workers`), those objects are left out of every collection; what
requests and models allocate later is collected as before, so a model unloaded later is still
freed. Only the processes that serve do it: a process that builds many apps (the tests) would
keep whatever of the earlier ones is still alive.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_objects() -> None:
    """Collect what start-up left as garbage, then move every object tracked now to the
    collector's permanent generation."""
    gc.collect()
    gc.freeze()
    logger.info("%d start-up objects frozen out of the garbage collector's passes", gc.get_freeze_count())
