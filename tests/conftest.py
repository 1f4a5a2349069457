from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ is not a package; make its helper modules importable.
sys.path.insert(0, str(Path(__file__).parent))

from pg import HOW_TO, cluster, fresh_database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    with cluster() as url:
        yield url


def _no_server() -> None:
    if os.environ.get("BACKCHANNEL_REQUIRE_PG") == "1":
        pytest.fail(HOW_TO)
    pytest.skip(HOW_TO)


@pytest.fixture
async def pg_url(pg_server: str | None) -> str:
    """A fresh PostgreSQL database for one test."""
    if pg_server is None:
        _no_server()
    assert pg_server is not None
    return await fresh_database(pg_server)


@pytest.fixture(params=["sqlite", "postgres"])
async def store_section(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: str | None
) -> dict[str, Any]:
    """The ``[store]`` section for each backend: behaviour suites run on both."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "bc.db")}
    if pg_server is None:
        _no_server()
    assert pg_server is not None
    return {"url": await fresh_database(pg_server)}
