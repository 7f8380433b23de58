"""Creating and checking the async engine: SQLite (WAL) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

from mas.errors import ConfigError, StoreUnavailable

__all__ = ["connect", "display_url", "error_reason", "parse_database_url", "refused_data"]


def parse_database_url(url: str) -> URL:
    """Validate a `MAS_DATABASE_URL`, naming the drivers mas supports."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"MAS_DATABASE_URL is not a database URL: {exc}") from exc
    except ValueError:  # SQLAlchemy's own int() of the port
        raise ConfigError(
            "MAS_DATABASE_URL is not a database URL: its port is not a number"
        ) from None
    if parsed.port is not None and not 0 < parsed.port <= 65535:
        raise ConfigError(
            f"MAS_DATABASE_URL is not a database URL: port {parsed.port} is not in 1-65535"
        )
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"MAS_DATABASE_URL uses driver {parsed.drivername!r}: use "
            "'sqlite+aiosqlite:///./mas.db' or 'postgresql+asyncpg://user:pass@host/db'"
        )
    return parsed


def display_url(url: URL) -> str:
    """The URL with its password masked, for errors and logs."""
    return url.render_as_string(hide_password=True)


async def connect(url: str, *, schema: str | None = None, timeout: float = 10.0) -> AsyncEngine:
    """Create an engine and prove it can reach the database.

    Every wait on the database is bounded by `timeout` seconds: connecting, waiting for a
    connection from the pool, and (PostgreSQL) each statement, cancelled on the server when
    it runs out; SQLite waits that long for a lock, and three times as long for its one
    connection.

    Raises:
        ConfigError: the URL is malformed or names an unsupported driver.
        StoreUnavailable: the database cannot be reached (password masked in the message).
    """
    parsed = parse_database_url(url)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": timeout}
        # One connection: SQLite has a single writer, and two connections contending for
        # it fall into SQLite's busy handler, which sleeps in steps of up to 100 ms. A
        # queue for the one connection hands it over as soon as it is free.
        options["pool_size"] = 1
        options["max_overflow"] = 0
        options["pool_reset_on_return"] = None  # `_sqlite_reset` rolls back only when needed
        # The one connection is shared on purpose: a read may wait for the writer's batch,
        # which can be large after a burst. A local file cannot vanish like a server, so
        # the wait is bounded more loosely than a statement.
        options["pool_timeout"] = 3 * timeout
    else:
        options["pool_pre_ping"] = True
        options["pool_size"] = 5
        options["pool_timeout"] = timeout
        # A host that drops packets must not hang a connect (asyncpg's default is 60 s) or a
        # statement (no default at all: a blackholed query waits for TCP to give up).
        connect_args: dict[str, Any] = {"timeout": timeout, "command_timeout": timeout}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        options["connect_args"] = connect_args
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "do_connect", _sqlite_connect)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _sqlite_reset)
    else:
        event.listen(engine.sync_engine, "invalidate", _terminate_at_once)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError, DBAPIError, TimeoutError) as exc:
        await engine.dispose()
        raise StoreUnavailable(
            f"cannot reach the database at {display_url(parsed)}: {error_reason(exc)}"
        ) from exc
    return engine


def _sqlite_connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Open SQLite connections that can be stopped twice (see `sqlite_driver`)."""
    from mas.persistence.sqlite_driver import open_connection

    return dialect.dbapi.connect(*cargs, async_creator_fn=open_connection, **cparams)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the API) and the writer (the runtime) work at once; NORMAL sync is
    # durable across application crashes, which is what the audit needs.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """Roll back a connection going back to the pool only if it holds a transaction.

    sqlite3 knows without a trip to aiosqlite's thread; the pool's default rolls back on
    every return, a trip that was a quarter of each journal batch's (it commits its own).
    """
    if (
        state.asyncio_safe
        and not state.terminate_only
        and dbapi_connection.driver_connection.in_transaction
    ):
        dbapi_connection.rollback()


def _terminate_at_once(dbapi_connection: Any, _record: Any, _error: BaseException | None) -> None:
    """Close a connection the pool gives up on now, without a goodbye to the server.

    SQLAlchemy then closes an asyncpg connection politely, waiting up to 2 s (its own, fixed)
    for the server's answer; across a partition nobody answers, so every pooled connection
    would add those seconds to a call already bounded by `timeout`, and to /readyz.
    """
    dbapi_connection.driver_connection.terminate()


def refused_data(error: BaseException | None) -> bool:
    """The database refused a value (SQLSTATE class 22), not the connection or the schema.

    asyncpg's refusals reach us as a plain DBAPIError carrying the SQLSTATE, not DataError.
    """
    if isinstance(error, DataError):
        return True
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return isinstance(code, str) and code.startswith("22")


def error_reason(exc: BaseException) -> str:
    """The driver's error class and first line: no SQL text, no parameters, no password."""
    original = getattr(exc, "orig", None) or exc.__cause__ or exc
    return f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}"
