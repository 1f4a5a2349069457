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

# A developer's shell may hold real credentials or overrides as BACKCHANNEL_* variables:
# they would leak into every config the tests build (and an unknown one is a config
# error), so the suite starts without them. Test settings use other names.
for _name in [n for n in os.environ if n.upper().startswith("BACKCHANNEL_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    with cluster() as url:
        yield url


def _no_server() -> None:
    if os.environ.get("REQUIRE_POSTGRES") == "1":
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
