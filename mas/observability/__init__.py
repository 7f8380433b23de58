"""Logs (structlog JSON), and later metrics and traces, that follow one request everywhere."""

from mas.observability.logging import configure_logging, reset_logging

__all__ = ["configure_logging", "reset_logging"]
