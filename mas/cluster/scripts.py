"""Lua scripts shared by the cluster helpers (run atomically by Redis, cached by SHA)."""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE_LEASE", "COMPARE_AND_DELETE", "RENEW_LEASE"]

COMPARE_AND_DELETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Delete KEYS[1] only while it holds ARGV[1]; 1 when deleted, else 0.

A plain DEL after a GET would race: the key can expire and be taken by another owner between
the two, and the DEL would then remove *their* claim or lease.
"""

ACQUIRE_LEASE: Final = """
local current = redis.call('GET', KEYS[1])
if current then
    local sep = string.find(current, ':', 1, true)
    if sep and string.sub(current, sep + 1) == ARGV[1] then
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return tonumber(string.sub(current, 1, sep - 1))
    end
    return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d:%s', token, ARGV[1]), 'PX', ARGV[2])
return token
"""
"""Take lease KEYS[1] for owner ARGV[1] for ARGV[2] ms; the fencing token, or nil when taken.

The token comes from INCR on the counter KEYS[2], only when the lease is free, so tokens grow
strictly with every acquisition. An owner that already holds the lease gets its token back
with the TTL reset: that makes an acquire whose reply was lost (and which redis-py retried)
return the lease it took instead of reporting it as someone else's.
"""

RENEW_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
"""Reset the TTL of KEYS[1] to ARGV[2] ms only while it holds ARGV[1]; 1 when renewed."""
