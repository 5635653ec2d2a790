"""Which hub database `healthspace audit` opens: paths, URLs, URL query parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthspace.auditing import hub_url
from healthspace.core.errors import NotFound


def test_a_sqlite_url_with_a_query_names_the_file_it_opens(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    db.write_bytes(b"")
    assert hub_url(f"sqlite:///{db}?timeout=4") == f"sqlite:///{db}?timeout=4"
    assert hub_url(str(db)) == f"sqlite:///{db.resolve()}"
    with pytest.raises(NotFound, match="no hub database"):
        hub_url(f"sqlite:///{tmp_path / 'missing.sqlite'}?timeout=4")
    assert hub_url("postgresql+psycopg://u@127.0.0.1:5/hub").startswith("postgresql")
