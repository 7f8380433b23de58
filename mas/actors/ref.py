"""AgentRef: the handle through which code outside an agent reaches it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mas.actors.status import RUNNING
from mas.errors import AgentStopped, MasError
from mas.messages import Message

if TYPE_CHECKING:
    from mas.actors.cell import AgentCell
    from mas.actors.system import ActorSystem

__all__ = ["AgentRef"]


class AgentRef:
    """A handle to one agent, local or remote; stays valid across restarts.

    A ref to a local agent delivers straight into its mailbox; a ref to an agent hosted by
    another node goes through the transport.
    """

    __slots__ = ("_cell", "_runtime", "address", "id")

    def __init__(self, runtime: ActorSystem, agent_id: str, cell: AgentCell | None = None) -> None:
        self._runtime = runtime
        self._cell = cell
        self.id = agent_id
        self.address = f"agent:{agent_id}"

    def __repr__(self) -> str:
        return f"AgentRef({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def is_alive(self) -> bool:
        """True while the agent exists (running, restarting or suspended)."""
        cell = self._cell or self._runtime.local_cell(self.id)
        return cell is not None and not cell.stopped

    async def tell(self, message: Message) -> None:
        """Fire-and-forget.

        Raises:
            AgentStopped: the agent has stopped.
            MailboxFull: its mailbox is full and its policy is `reject`.
            UnknownAgent: (remote refs) no node hosts the agent.
        """
        cell = self._cell
        if cell is not None and self._runtime.fast_path:
            # The common case, kept short: a local, running agent with room in its mailbox.
            # A first send addresses the message itself (`Message.addressed_to`, inlined).
            target = message.target
            if target is None or target == self.address:
                message.target = self.address
                if cell.status is RUNNING and cell.mailbox.try_put(message):
                    if not cell.busy:
                        cell.activate()
                    return
        await self._runtime.tell(self, message)

    async def ask(self, message: Message, timeout: float) -> Message:
        """Send and wait for the reply.

        Raises:
            AskTimeout: no reply within `timeout` seconds (also a `TimeoutError`).
            HandlerError: the handler failed on every attempt.
            AgentStopped: the agent stopped before answering.
        """
        return await self._runtime.ask(self, message, timeout=timeout)

    async def stop(self) -> None:
        """Stop the agent for good (no restart): drains its current handler, then `stop()`."""
        await self._runtime.stop_agent(self.id)

    def watch(self, watcher: AgentRef) -> None:
        """Deliver a `Terminated` message to `watcher` when this agent stops.

        Raises:
            AgentStopped: this agent has already stopped.
            MasError: the agent is not hosted by this runtime (remote watch is not supported).
        """
        cell = self._cell or self._runtime.local_cell(self.id)
        if cell is None:
            raise MasError(f"cannot watch {self.id!r}: only agents of this runtime can be watched")
        if cell.stopped:
            raise AgentStopped(self.id)
        cell.add_watcher(watcher.address)
