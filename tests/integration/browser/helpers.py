"""Driving the console in a real browser: sign-in through the form, a watch for CSP
violations and script errors on every page, screenshots and accessible-label checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect

# Screenshots of key pages, for people to look at (gitignored; CI keeps them with the run).
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 15_000

# Installed before any page script runs, so a violation anywhere on a page is reported.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__hsCspViolation({directive: e.violatedDirective, blocked: e.blockedURI,
                           source: e.sourceFile, line: e.lineNumber, sample: e.sample,
                           page: document.location.pathname});
});
"""


@dataclass
class Watch:
    """What went wrong in a browser context: CSP violations (the DOM event and the console
    message Chromium logs for each) and uncaught script errors."""

    csp: list[Any] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.csp.clear()
        self.console.clear()
        self.errors.clear()

    def problems(self) -> list[str]:
        return [f"CSP violation: {v}" for v in self.csp] + \
            [f"console: {m}" for m in self.console] + [f"script error: {e}" for e in self.errors]


class Console:
    """One test's browser contexts over the live hub, one per signed-in role or visitor."""

    def __init__(self, browser: Browser, url: str, tokens: dict[str, str]) -> None:
        self.browser = browser
        self.url = url
        self.tokens = tokens
        self.watch = Watch()
        self._contexts: list[BrowserContext] = []

    def visitor(self, locale: str = "en-GB") -> Page:
        """A fresh page with no session (its own cookie jar), watched."""
        context = self.browser.new_context(locale=locale, viewport={"width": 1280,
                                                                    "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.expose_binding("__hsCspViolation",
                               lambda _source, found: self.watch.csp.append(found))
        context.add_init_script(CSP_WATCH)
        self._contexts.append(context)
        page = context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.watch.errors.append(str(exc)))
        return page

    def _on_console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in \
                message.text:
            self.watch.console.append(message.text)

    def sign_in(self, role: str, *, locale: str = "en-GB", next: str = "") -> Page:
        """A page signed in as ``role`` through the sign-in form with the role's token."""
        page = self.visitor(locale)
        self.goto(page, "/console/sign-in" + (f"?next={next}" if next else ""))
        fill_token_form(page, self.tokens[role])
        expect(page).to_have_url(re.compile(re.escape(self.url + (next or
                                                                  "/console/dashboard"))))
        return page

    def goto(self, page: Page, path: str) -> Any:
        return page.goto(self.url + path, wait_until="load")

    def close(self) -> None:
        for context in self._contexts:
            context.close()


def fill_token_form(page: Page, token: str) -> None:
    form = page.locator("form", has=page.get_by_label("Token", exact=True))
    form.get_by_label("Token", exact=True).fill(token)
    form.get_by_role("button", name="Sign in").click()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def nav_labels(page: Page) -> list[str]:
    """The main navigation's link texts (the header's, not a page's own table of contents)."""
    header = page.locator("header.top").get_by_role("navigation")
    return [t.strip() for t in header.get_by_role("link").all_inner_texts()]


# Every form control with the label text a person (or a screen reader) gets for it.
_LABELS = """(els) => els.map((e, i) => {
  e.dataset.hsControl = String(i);
  const aria = e.getAttribute("aria-label");
  const texts = [...(e.labels || [])].map((l) => l.textContent);
  return {i: String(i), id: e.id, name: e.getAttribute("name"), tag: e.tagName,
          label: (aria || texts.join(" ")).replace(/\\s+/g, " ").trim()};
})"""


def unlabelled_controls(page: Page) -> tuple[int, list[dict[str, Any]]]:
    """How many visible form controls the page has, and those Playwright's ``get_by_label``
    cannot find by their own label (no label, or a label that names another control)."""
    controls = page.locator("input:not([type=hidden]), select, textarea")
    found = controls.evaluate_all(_LABELS)
    bad = []
    for control in found:
        if not control["label"]:
            bad.append(control)
            continue
        hits = page.get_by_label(control["label"], exact=True).evaluate_all(
            "(els) => els.map((e) => e.dataset.hsControl)")
        if control["i"] not in hits:
            bad.append(control)
    return len(found), bad
