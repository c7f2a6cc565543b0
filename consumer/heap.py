"""The consumer process's heap, settled once the service has started.

What start-up allocates (modules, pydantic and msgspec schemas, clients, the apply script)
lives as long as the process. Left in the collector's generations, every full collection walks
it again while the consumer allocates a few tracked objects per record; frozen, collections
walk only what the records made. ``gc.freeze`` is CPython's tool for exactly this.
"""

import gc


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then move the survivors out of the collector's
    generations for good. Call once, after the service has started, in a process that runs
    only the service (``clicktune consume``), not in a host application or a test run."""
    gc.collect()
    gc.freeze()
