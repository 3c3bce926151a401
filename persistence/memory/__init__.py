"""The memory tier: InMemorySaver's three dicts and the lock over them (``cache``), which threads
are resident and what they cost (``residency``, counted as ``sizes`` says), the changes not yet in
PostgreSQL (``changes``), the write path (``writes``), deletes, copies and prunes (``edits``), and
the restore guard (``guard``).

May import ``persistence.store`` (its data shapes, encoding and summaries) and the base modules
(``errors``, ``records``); never ``persistence.fleet``, ``persistence.ops``, the CLI or the facade:
what the cache needs from above (loading a cold thread, backing up under pressure) it gets through
:meth:`~persistence.memory.cache.MemoryCache.bind`.
"""

from persistence.memory.cache import MemoryCache, Pressure
from persistence.memory.residency import ResidencyStats, Resident

__all__ = ["MemoryCache", "Pressure", "Resident", "ResidencyStats"]
