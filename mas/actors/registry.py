"""The index of what one runtime hosts: agents by id, by type and by topic; supervisors by id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mas.errors import DuplicateAgent
from mas.messages import topic_matches

if TYPE_CHECKING:
    from mas.actors.cell import AgentCell
    from mas.actors.supervisor import Supervisor

__all__ = ["LocalRegistry"]


class LocalRegistry:
    """Local lookups for routing; knows nothing of transports (the runtime tells those).

    Type rotations and topic match lists are caches rebuilt after a change, so that routing a
    message by type or topic does not scan every agent.
    """

    def __init__(self) -> None:
        self.cells: dict[str, AgentCell] = {}
        self.supervisors: dict[str, Supervisor] = {}
        self._by_type: dict[str, dict[str, AgentCell]] = {}
        self._rotation: dict[str, tuple[list[AgentCell], list[int]]] = {}
        self._topics: dict[str, dict[str, AgentCell]] = {}
        self._matches: dict[str, list[AgentCell]] = {}

    def __len__(self) -> int:
        return len(self.cells)

    def add(self, cell: AgentCell) -> None:
        """Index a new agent. Raises `DuplicateAgent` when its id is taken."""
        if cell.id in self.cells:
            raise DuplicateAgent(cell.id)
        self.cells[cell.id] = cell
        self._by_type.setdefault(cell.agent_type, {})[cell.id] = cell
        self._rotation.pop(cell.agent_type, None)

    def remove(self, cell: AgentCell) -> list[str]:
        """Forget an agent; returns the topic patterns it was subscribed to."""
        if self.cells.get(cell.id) is not cell:
            return []
        del self.cells[cell.id]
        same_type = self._by_type.get(cell.agent_type)
        if same_type is not None:
            same_type.pop(cell.id, None)
            if not same_type:
                del self._by_type[cell.agent_type]
        self._rotation.pop(cell.agent_type, None)
        patterns = list(cell.topics or ())
        for pattern in patterns:
            subscribers = self._topics.get(pattern)
            if subscribers is not None:
                subscribers.pop(cell.id, None)
                if not subscribers:
                    del self._topics[pattern]
        if patterns:
            self._matches.clear()
        return patterns

    def live_of_type(self, agent_type: str) -> list[AgentCell]:
        """The local agents of a type that take messages (not stopped)."""
        return [cell for cell in self._by_type.get(agent_type, {}).values() if not cell.stopped]

    def hosts_type(self, agent_type: str) -> bool:
        """Whether a live local agent of the type exists (`pick` would find one)."""
        return any(not cell.stopped for cell in self._by_type.get(agent_type, {}).values())

    def types_offering(self, capability: str) -> list[str]:
        """The types of the live local agents that offer `capability`, sorted."""
        return sorted(
            agent_type
            for agent_type, cells in self._by_type.items()
            if any(capability in cell.capabilities and not cell.stopped for cell in cells.values())
        )

    def capabilities(self) -> set[str]:
        """Every capability a live local agent offers."""
        return {
            capability
            for cells in self._by_type.values()
            for cell in cells.values()
            if not cell.stopped
            for capability in cell.capabilities
        }

    def pick(self, agent_type: str) -> AgentCell | None:
        """Round-robin over the live local agents of a type."""
        rotation = self._rotation.get(agent_type)
        if rotation is None:
            cells = [c for c in self._by_type.get(agent_type, {}).values() if not c.stopped]
            if not cells:
                return None
            rotation = self._rotation[agent_type] = (cells, [0])
        cells, position = rotation
        index = position[0] = (position[0] + 1) % len(cells)
        return cells[index]

    def subscribe(self, cell: AgentCell, pattern: str) -> bool:
        """Subscribe an agent to a pattern; False if it already was."""
        subscribers = self._topics.setdefault(pattern, {})
        if cell.id in subscribers:
            return False
        subscribers[cell.id] = cell
        if cell.topics is None:
            cell.topics = []
        cell.topics.append(pattern)
        self._matches.clear()
        return True

    def subscribers(self, key: str) -> list[AgentCell]:
        """Agents with at least one pattern matching `key`, each once."""
        cells = self._matches.get(key)
        if cells is None:
            found = {
                cell.id: cell
                for pattern, subscribers in self._topics.items()
                if topic_matches(pattern, key)
                for cell in subscribers.values()
            }
            cells = self._matches[key] = list(found.values())
        return cells

    def add_supervisor(self, supervisor: Supervisor) -> None:
        if supervisor.id in self.supervisors:
            raise DuplicateAgent(supervisor.id)
        self.supervisors[supervisor.id] = supervisor

    def remove_supervisor(self, supervisor: Supervisor) -> None:
        if self.supervisors.get(supervisor.id) is supervisor:
            del self.supervisors[supervisor.id]
