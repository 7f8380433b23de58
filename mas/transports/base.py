"""What the transports share: the port's protocols (defined with the core, in
`mas.actors.transport`) and `TrackedDelivery`, the settle-once bookkeeping of a delivery."""

from __future__ import annotations

from typing import Any

from mas.actors.deadletters import DeadLetter
from mas.actors.transport import Delivery, Transport, TransportNode
from mas.messages import Message

__all__ = ["DeadLetter", "Delivery", "TrackedDelivery", "Transport", "TransportNode"]


class TrackedDelivery:
    """What the transports' deliveries share: held in the transport's `unacked` set from the
    moment they arrive until they are settled, and settled once whatever is called twice."""

    __slots__ = ("_settled", "_unacked", "attempt", "message")

    # A transport whose broker can hand a message out again says so per delivery.
    redelivered = False
    claimed_elsewhere = False

    def __init__(self, message: Message, attempt: int, unacked: set[Any]) -> None:
        self.message = message
        self.attempt = attempt
        self._unacked = unacked
        self._settled = False
        unacked.add(self)

    def _settle(self) -> bool:
        """True the first time only: the caller then settles with the broker."""
        if self._settled:
            return False
        self._settled = True
        self._unacked.discard(self)
        return True
