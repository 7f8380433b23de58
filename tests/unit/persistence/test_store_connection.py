"""Opening a Store: an unreachable database or a bad URL fails with a clear, safe error.

The message of a connection failure is printed and logged, so it must never carry the
database password; a URL mas cannot use is a configuration mistake, reported as such.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from mas.errors import ConfigError, StoreUnavailable
from mas.persistence import Store
from mas.persistence.engine import connect

pytestmark = pytest.mark.anyio

UNREACHABLE = "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/x"


async def test_an_unreachable_database_raises_store_unavailable_with_the_password_masked() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await Store.open(UNREACHABLE)
    message = str(caught.value)
    assert "s3cret" not in message
    assert "***" in message
    assert "127.0.0.1:1" in message  # the user can see which database it tried


async def test_the_password_is_not_in_the_chained_store_unavailable_either() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await Store.open(UNREACHABLE)
    rendered = repr(caught.value) + "".join(str(a) for a in caught.value.args)
    assert "s3cret" not in rendered


@pytest.mark.parametrize(
    "url",
    [
        "not a database url",
        "mysql+aiomysql://root@127.0.0.1/mas",
        "sqlite:///./mas.db",  # the synchronous driver
        "postgresql://postgres@127.0.0.1/test",  # psycopg2, not asyncpg
    ],
)
async def test_a_malformed_url_or_unsupported_driver_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="MAS_DATABASE_URL"):
        await Store.open(url)


async def test_the_config_error_names_the_supported_drivers() -> None:
    with pytest.raises(ConfigError) as caught:
        await Store.open("mysql+aiomysql://root@127.0.0.1/mas")
    assert "sqlite+aiosqlite" in str(caught.value)
    assert "postgresql+asyncpg" in str(caught.value)


async def test_a_sqlite_connection_left_in_a_transaction_is_rolled_back_on_return(
    tmp_path: Path,
) -> None:
    """The pool rolls back only what is open; what was left open must not leak to the next user."""
    engine = await connect(f"sqlite+aiosqlite:///{tmp_path}/reset.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("INSERT INTO t VALUES (1)")  # behind SQLAlchemy's back
            assert driver.in_transaction
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert not driver.in_transaction
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    finally:
        await engine.dispose()


SCHEMA_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "revision": Store.revision,
    "check_schema": Store.check_schema,
    "migrate": Store.migrate,
    "ping": lambda store: store.ping(5.0),
}


def _spoil(path: Path) -> None:
    """Replace the SQLite database (and its WAL) with a file SQLite cannot read."""
    for file in path.parent.glob(path.name + "*"):
        file.unlink()
    path.write_bytes(b"garbage!" * 512)


@pytest.mark.parametrize("call", SCHEMA_CALLS.values(), ids=SCHEMA_CALLS.keys())
async def test_every_store_call_maps_a_lost_database_to_store_unavailable(
    tmp_path: Path, call: Callable[[Store], Awaitable[object]]
) -> None:
    """The schema calls too: a driver error from any Store method is `StoreUnavailable`."""
    path = tmp_path / "mas.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}", migrate=True)
    try:
        await store.engine.dispose()  # the next call opens the file again...
        _spoil(path)  # ...and finds no database in it
        with pytest.raises(StoreUnavailable, match="file is not a database") as caught:
            await call(store)
        assert caught.value.__cause__ is not None
    finally:
        await store.close()
