"""Orchestration across nodes: which node starts an agent, and where work goes."""

from mas.orchestrator.spawner import SPAWN, spawner_for, spawner_type

__all__ = ["SPAWN", "spawner_for", "spawner_type"]
