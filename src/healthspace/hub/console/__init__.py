"""The hub's web console: server-rendered pages for every role, in English and Chinese.

Every page is a view over the same services the API uses; the console adds sign-in by
session cookie, CSRF tokens on forms, a strict Content-Security-Policy and translations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from healthspace.hub.console.web import (
    PREFIX,
    PageForbidden,
    SecurityHeaders,
    SignInRequired,
    forbidden_page,
    sign_in_redirect,
)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console's pages, static files, error pages and security headers."""
    from healthspace.hub.console.pages import ROUTERS

    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX, include_in_schema=False)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="console-static")

    async def _sign_in(_request: Request, exc: Exception) -> Any:
        assert isinstance(exc, SignInRequired)
        return sign_in_redirect(exc)

    async def _forbidden(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, PageForbidden)
        return forbidden_page(request, exc)

    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(PageForbidden, _forbidden)
    app.add_middleware(SecurityHeaders)
