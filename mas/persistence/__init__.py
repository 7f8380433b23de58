"""Persistence: agents, tasks and the message audit in SQLite or PostgreSQL (SQLAlchemy 2).

Imported only when persistence is used: `import mas` does not load SQLAlchemy.
"""

from __future__ import annotations

from mas.config import Settings
from mas.persistence.journal import BatchWriter, StoreJournal
from mas.persistence.store import AgentRecord, Batch, Store, TaskRecord

__all__ = [
    "AgentRecord",
    "Batch",
    "BatchWriter",
    "Store",
    "StoreJournal",
    "TaskRecord",
    "open_journal",
    "open_store",
]


async def open_store(settings: Settings, *, migrate: bool | None = None) -> Store:
    """The Store `MAS_DATABASE_URL` names (SQLite migrates itself; others are checked)."""
    return await Store.open(
        settings.database_url.get_secret_value(),
        schema=settings.database_schema,
        migrate=migrate,
        timeout=settings.database_timeout,
        outbox_lease=settings.outbox.lease,
    )


async def open_journal(settings: Settings) -> StoreJournal:
    """A journal writing to the Store of `settings`, with `MAS_AUDIT` applied."""
    return StoreJournal(
        await open_store(settings),
        audit=settings.audit,
        owns_store=True,
        heartbeat_interval=settings.heartbeat_interval,
        outbox_lease=settings.outbox.lease,
        outbox_sweep_interval=settings.outbox.sweep_interval,
        # Past the longest a retry or deferral keeps a message away from its queue.
        retire_after=settings.heartbeat_ttl + settings.retry.max_delay + 5.0,
        agents_stale_after=settings.heartbeat_ttl,
    )
