"""Lua scripts shared by the cluster helpers (run atomically by Redis, cached by SHA)."""

from __future__ import annotations

from typing import Final

__all__ = ["COMPARE_AND_DELETE"]

COMPARE_AND_DELETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Delete KEYS[1] only while it holds ARGV[1]; 1 when deleted, else 0.

A plain DEL after a GET would race: the key can expire and be taken by another owner between
the two, and the DEL would then remove *their* claim.
"""
