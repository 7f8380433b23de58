"""The composition root: `Runtime` turns `Settings` into the parts an ActorSystem runs on.

Everything that reads a setting to choose an implementation lives here — which transport
(`MAS_TRANSPORT`), whether to open the SQL journal (`MAS_PERSIST`) — so that the actor core
(`mas.actors`) is given its parts and imports no transport, database or HTTP code. The
broker clients and SQLAlchemy are imported only when the settings ask for them.
"""

from __future__ import annotations

from mas.actors.clock import Clock
from mas.actors.faults import DeliveryFaults
from mas.actors.journal import Journal
from mas.actors.system import ActorSystem
from mas.actors.transport import Transport
from mas.config import Settings
from mas.transports import create_transport

__all__ = ["Runtime"]


class Runtime(ActorSystem):
    """Hosts agents, routes messages, supervises, and drains on shutdown.

    `async with Runtime() as rt:` starts the root supervisor, the journal (when
    `MAS_PERSIST` is on) and the transport `MAS_TRANSPORT` names; leaving the block drains.

    Args:
        settings: configuration; read from `MAS_*` environment variables when omitted.
        transport: overrides the transport `settings.transport` names.
        clock: overrides the event loop's clock (the test kit passes a manual one).
        node_id: this runtime's name among the nodes sharing a transport.
        journal: overrides the SQL journal `settings.persist` asks for.
        faults: drops or duplicates local deliveries (the test kit's `FaultPlan`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        node_id: str | None = None,
        journal: Journal | None = None,
        faults: DeliveryFaults | None = None,
    ) -> None:
        settings = settings if settings is not None else Settings()
        super().__init__(
            settings,
            transport=transport if transport is not None else create_transport(settings),
            clock=clock,
            node_id=node_id,
            journal=journal,
            faults=faults,
        )

    async def _open_journal(self) -> Journal | None:
        if self.journal is None and self.settings.persist:
            from mas.persistence import open_journal  # the SQL stack loads only when asked

            return await open_journal(self.settings)
        return self.journal
