"""Agents shipped inside the mas package, so `mas up` runs them from any install.

They live here, not in a top-level package: a wheel that claimed a generic import name such
as `agents` would clash with other distributions that use it (OpenAI's Agents SDK does).
"""

from mas.agents.calc import CalcAgent
from mas.agents.echo import EchoAgent
from mas.agents.llm import Completion, Model, ModelAgent, ModelRefused, ModelUnavailable, Usage
from mas.agents.planner import PlannerAgent, RulePlanner
from mas.agents.summarize import SummarizeAgent

__all__ = [
    "BUILT_IN",
    "CalcAgent",
    "Completion",
    "EchoAgent",
    "Model",
    "ModelAgent",
    "ModelRefused",
    "ModelUnavailable",
    "PlannerAgent",
    "RulePlanner",
    "SummarizeAgent",
    "Usage",
]

BUILT_IN = (EchoAgent, PlannerAgent, CalcAgent, SummarizeAgent)
"""What `mas up` runs: echo, and the planner with the agents its rule planner's plans ask."""
