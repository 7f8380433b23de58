"""Agents shipped inside the mas package, so `mas up` runs them from any install.

They live here, not in a top-level package: a wheel that claimed a generic import name such
as `agents` would clash with other distributions that use it (OpenAI's Agents SDK does).
"""

from mas.agents.echo import EchoAgent

__all__ = ["EchoAgent"]
