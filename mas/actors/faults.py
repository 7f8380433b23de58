"""The hook through which a test kit injects delivery faults into the production path."""

from __future__ import annotations

from typing import Protocol

from mas.messages import Message

__all__ = ["DeliveryFaults"]


class DeliveryFaults(Protocol):
    """Decides how many copies of a local delivery arrive: 0 drops it, 2 duplicates it.

    Given to `Runtime(faults=...)`; the test kit's `FaultPlan` is one. The runtime consults
    it on every local delivery (and then takes no shortcut past it), so tests that inject
    faults still run the delivery code production runs.
    """

    def copies(self, message: Message) -> int: ...
