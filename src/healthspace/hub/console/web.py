"""What every console page shares: the signed-in viewer, role checks, CSRF, rendering, and
the security headers (a strict Content-Security-Policy: every script and style is a file the
package ships; no inline code, no eval, nothing from another origin)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthspace.core.enums import Role
from healthspace.hub.console.i18n import LANGUAGES, Translator, pick
from healthspace.hub.deps import get_hub
from healthspace.hub.principal import Principal
from healthspace.hub.services import console

PREFIX = "/console"
COOKIE = "hs_console"
LANG_COOKIE = "hs_lang"
SIGNIN_COOKIE = "hs_signin"  # double-submit token of the sign-in form (login CSRF)
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ALL = frozenset(Role)

# (path, label, roles): the navigation, one line per page, and who sees each link (each
# page also checks its roles itself).
NAV: list[tuple[str, str, frozenset[Role]]] = [
    ("/dashboard", "Dashboard", ALL),
    ("/catalog", "Catalog", ALL),
    ("/studies", "Studies", ALL),
    ("/studies/new", "New study", frozenset({Role.CONSUMER, Role.OPERATOR})),
    ("/similar-patients", "Similar patients", frozenset({Role.CONSUMER, Role.OPERATOR})),
    ("/approvals", "Approvals", frozenset({Role.DATA_HOLDER_ADMIN, Role.OPERATOR})),
    ("/audit", "Audit", frozenset({Role.AUDITOR, Role.OPERATOR})),
    ("/consent", "Consent", frozenset({Role.DATA_HOLDER_ADMIN, Role.OPERATOR})),
    ("/models", "Models", ALL),
    ("/billing", "Billing", ALL),
]


class SignInRequired(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


class PageForbidden(Exception):
    def __init__(self, viewer: Viewer, message: str) -> None:
        self.viewer = viewer
        self.message = message


@dataclass(frozen=True)
class Viewer:
    principal: Principal | None
    csrf: str
    t: Translator

    @property
    def role(self) -> Role | None:
        return self.principal.role if self.principal else None


def language(request: Request) -> str:
    return pick(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE),
                request.headers.get("accept-language"))


def current(request: Request) -> Viewer:
    """Whoever this request's console cookie belongs to (principal None if nobody)."""
    hub = get_hub(request)
    with hub.sessions() as session:
        found = console.resolve(session, hub.clock, request.cookies.get(COOKIE))
    t = Translator(language(request))
    if found is None:
        return Viewer(None, "", t)
    return Viewer(found[0], found[1], t)


def page(*roles: Role) -> Callable[[Request], Viewer]:
    """A dependency admitting signed-in users of ``roles`` (all roles if none given)."""
    allowed = frozenset(roles) or ALL

    def check(request: Request) -> Viewer:
        viewer = current(request)
        if viewer.principal is None:
            raise SignInRequired(request.url.path + (f"?{request.url.query}"
                                                     if request.url.query else ""))
        if viewer.role not in allowed:
            raise PageForbidden(viewer, viewer.t("This page is for: {roles}.", roles=", ".join(
                viewer.t(str(r)) for r in sorted(allowed))))
        return viewer

    return check


def check_csrf(viewer: Viewer, token: str | None) -> None:
    if not token or not secrets.compare_digest(token, viewer.csrf):
        raise PageForbidden(viewer, viewer.t("The form expired. Reload the page and try "
                                             "again."))


def safe_next(target: str | None) -> str:
    """Only a console path is a redirect target (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return PREFIX + "/dashboard"


def nav_for(viewer: Viewer) -> list[tuple[str, str]]:
    return [(PREFIX + path, label) for path, label, roles in NAV if viewer.role in roles]


def render(request: Request, viewer: Viewer, template: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    nav = nav_for(viewer)
    here = request.url.path
    # the page's own entry: the longest navigation path this page lies under
    current_nav = max((path for path, _ in nav if here == path or here.startswith(path + "/")),
                      key=len, default=None)
    return TEMPLATES.TemplateResponse(request, template, {
        "viewer": viewer, "_": viewer.t, "t": viewer.t, "lang": viewer.t.lang,
        "languages": LANGUAGES, "nav": nav, "current_nav": current_nav, "prefix": PREFIX,
        "here": here, "back": _back(request), **context}, status_code=status_code)


def _back(request: Request) -> str:
    """This page's address with its query (filters, period) for the language switch to come
    back to; without ``lang``, which would override the new choice, and only for a GET (a
    form's answer has no address to open again)."""
    if request.method != "GET":
        return request.url.path
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/sign-in?next={quote(exc.target, safe='/')}",
                            status_code=303)


def forbidden_page(request: Request, exc: PageForbidden) -> HTMLResponse:
    return render(request, exc.viewer, "error.html", status_code=403,
                  title=exc.viewer.t("Not allowed"), message=exc.message)


class SecurityHeaders:
    """CSP and friends on every console response (plain ASGI: API requests pass straight
    through, with no per-request task or stream as a ``BaseHTTPMiddleware`` would add)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        extra = [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                 ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin")]
        if not path.startswith(PREFIX + "/static/"):
            extra.append(("Cache-Control", "no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def set_cookie(response: Response, request: Request, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
