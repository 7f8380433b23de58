"""`Database`: where a persistence test's database lives, and how to point mas at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mas.config import Settings
from mas.persistence import Store
from mas.testing import TestRuntime

__all__ = ["Database"]


@dataclass(frozen=True)
class Database:
    """Where a test's database lives, and how to point mas at it."""

    backend: str
    url: str
    schema: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    async def open_store(self, *, migrate: bool | None = True) -> Store:
        return await Store.open(self.url, schema=self.schema, migrate=migrate)

    def settings(self, **overrides: Any) -> Settings:
        """Settings that persist into this database (log level WARNING unless overridden)."""
        values: dict[str, Any] = {
            "database_url": self.url,
            "database_schema": self.schema,
            "persist": True,
            "log_level": "WARNING",
        }
        return Settings(**(values | overrides))

    def runtime(self, **overrides: Any) -> TestRuntime:
        """A TestRuntime (manual clock, JSON on every hop) persisting into this database."""
        return TestRuntime(self.settings(serialize_messages=True, **overrides))

    def cli_env(self) -> dict[str, str]:
        """Environment variables for a `mas` subprocess that must use this database."""
        env = {"MAS_DATABASE_URL": self.url}
        if self.schema:
            env["MAS_DATABASE_SCHEMA"] = self.schema
        return env
