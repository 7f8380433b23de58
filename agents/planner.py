"""The planner under the repository's `agents.planner:PlannerAgent` name (the original design's
`agents/planner.py`); it ships as `mas.agents.planner`, with the calc and summarize agents its
example plans ask."""

from __future__ import annotations

from mas.agents.calc import CalcAgent
from mas.agents.planner import PlannerAgent, RulePlanner
from mas.agents.summarize import SummarizeAgent

__all__ = ["CalcAgent", "PlannerAgent", "RulePlanner", "SummarizeAgent"]
