"""`features.connect` URL handling (a real OpenMLDB cluster cannot run here: only the mapping
of URLs to `openmldb.dbapi.connect` arguments is checked for that path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import features
from features.exceptions import StoreURLError


def test_embedded_urls_absolute_and_relative(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = features.connect_embedded(f"embedded://{tmp_path / 'a'}")
    assert absolute.store.root == tmp_path / "a"
    monkeypatch.chdir(tmp_path)
    relative = features.connect_embedded("embedded://var/store")
    assert relative.store.root == Path("var/store")
    assert (tmp_path / "var" / "store" / "online.sqlite3").exists()
    assert features.is_embedded("embedded://x") and not features.is_embedded("openmldb:///d")


@pytest.mark.parametrize("url", ["embedded://", "mysql://host/db", "openmldb:///",
                                 "openmldb:///demo_db"])
def test_bad_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(StoreURLError, match="URL"):
        features.connect(url)


@pytest.mark.parametrize("url, expected", [
    ("openmldb:///demo_db?zk=zk1:2181&zkPath=/openmldb",
     {"database": "demo_db", "zk": "zk1:2181", "zkPath": "/openmldb"}),
    ("openmldb://10.0.0.5:6527/demo_db", {"database": "demo_db", "host": "10.0.0.5",
                                          "port": 6527}),
    ("openmldb:///demo_db?zk=zk1:2181&zkPath=/o&user=u&password=p",
     {"database": "demo_db", "zk": "zk1:2181", "zkPath": "/o", "user": "u", "password": "p"}),
])
def test_openmldb_urls_map_to_dbapi_arguments(url: str, expected: dict[str, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from openmldb import dbapi

    seen: dict[str, Any] = {}
    monkeypatch.setattr(dbapi, "connect", lambda **kwargs: seen.update(kwargs) or "conn")
    assert features.connect(url) == "conn"
    assert seen == expected
