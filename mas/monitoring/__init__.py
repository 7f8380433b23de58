"""What a process shows the tools that watch it: Prometheus metrics and readiness, served by
the gateway's routes and by a worker's own port (`endpoint`). Built on the runtime, unlike
`mas.observability` (logs, outages), which the core and the adapters use."""
