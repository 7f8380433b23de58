"""A runtime whose start fails part way leaves nothing of itself running."""

from __future__ import annotations

import asyncio

import pytest

from mas import Runtime, TransportError
from mas.actors.journal import Journal
from mas.persistence import Store, StoreJournal
from mas.transports.base import TransportNode
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

_JOURNAL_TASKS = {"mas-batch-writer", "mas-journal-heartbeat", "mas-outbox-relay"}


class BrokerRefuses(MemoryTransport):
    """A transport that cannot connect; it remembers the journal the runtime had opened."""

    journal: Journal | None = None

    async def start(self, node: TransportNode) -> None:
        assert isinstance(node, Runtime)
        self.journal = node.journal
        raise TransportError("cannot connect to the broker (test)")


async def test_a_start_the_transport_refuses_closes_the_journal_and_its_database(
    db: Database,
    store: Store,  # the schema, migrated
) -> None:
    transport = BrokerRefuses(MemoryBroker())
    runtime = Runtime(db.settings(), transport=transport)
    with pytest.raises(TransportError):
        async with runtime:
            raise AssertionError("the runtime started")
    journal = transport.journal
    assert isinstance(journal, StoreJournal)  # persistence was on and had started
    running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert not running & _JOURNAL_TASKS
    # The engine was disposed: its pool (replaced by `dispose`) holds no connection.
    pool = journal.store.engine.sync_engine.pool
    assert pool.checkedin() == 0 and pool.checkedout() == 0
    assert not runtime.running
