"""EchoAgent under the repository's `agents.echo:EchoAgent` name; it ships as `mas.agents`."""

from __future__ import annotations

from mas.agents.echo import EchoAgent

__all__ = ["EchoAgent"]
