"""A real Chromium (Debian's package, never a downloaded build) driven by Playwright against
the shared live federation (``live`` from tests/integration/conftest.py).

Without a working Chromium the browser tests fail under CI (``CI`` set) and skip on a
developer's machine; ``make test`` installs the package when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("HEALTHSPACE_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def unavailable(message: str) -> None:
    message += " (install it with `apt-get install chromium`, or run `make test`)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        unavailable(f"browser tests need Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("browser tests need the playwright package (the `test` extra)")
    driver = sync_playwright().start()
    try:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                          args=LAUNCH_ARGS)
    except Error as exc:
        driver.stop()
        unavailable(f"Chromium at {CHROMIUM} did not start: {exc}")
    yield launched
    launched.close()
    driver.stop()


@pytest.fixture(scope="session")
def role_tokens(live) -> dict[str, str]:
    """A sign-in token for each role; the users are the live federation's own."""
    return {"operator": live.fed.operator_token, "consumer": live.consumer_token,
            "data_holder_admin": live.steward_token, "auditor": live.auditor_token}


@pytest.fixture
def console(browser, live, role_tokens):
    """This test's browser contexts; afterwards no page may have hit the CSP or thrown."""
    from .helpers import Console

    pages = Console(browser, live.url, role_tokens)
    yield pages
    pages.close()
    assert pages.watch.problems() == []
