"""The fleet: several savers (processes) on one store, each thread served by one of them at a time.

``membership`` (the SQL of members, liveness locks, ``owners`` rows and settings), ``remote`` (the
command channel between processes), ``messenger`` (this member's side of it), ``ownership``
(claims, handoff requests, loading into the cache, threads lost or made offline) and ``member``
(handoffs asked of this member, the heartbeat).

May import ``persistence.memory``, ``persistence.store`` and the base modules (``db``, ``errors``,
``records``); never ``persistence.ops``, the CLI or the facade (the backup a handoff needs comes in
as a :class:`~persistence.fleet.member.Backups` collaborator).
"""

from persistence.fleet.membership import Member, Membership

__all__ = ["Member", "Membership"]
