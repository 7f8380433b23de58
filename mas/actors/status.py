"""An agent cell's lifecycle states (compared by identity on the fast path)."""

RUNNING = "running"
SUSPENDED = "suspended"  # between a failure and the restart: queues, does not handle
STOPPED = "stopped"  # terminal
