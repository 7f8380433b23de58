"""The actor core: agents, refs, mailboxes, cells, supervisors and the runtime.

Knows nothing about RabbitMQ, SQL or HTTP; the public names are exported from `mas`.
"""
