"""The Agent Server's checkpointer: a HybridSaver configured from DATABASE_URL, BACKUP_INTERVAL,
BACKUP_RETENTION and MEMORY_BUDGET (see persistence/agent_server.py)."""

from persistence.agent_server import checkpointer

__all__ = ["checkpointer"]
