"""Process-wide logging: human text or one JSON object per line, secrets always redacted.

Hub and node processes log to stderr. ``fmt="json"`` is meant for log shippers (Loki, ELK,
CloudWatch): every line is a self-contained JSON object with ``ts`` (ISO 8601, UTC),
``level``, ``logger`` and ``message``, plus every ``extra=`` field the caller passed and the
formatted traceback under ``exc_info``. A redaction filter runs on every handler so a token,
password or ``Authorization`` header never reaches a log line, whichever format is chosen.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from healthspace.core.errors import InvalidInput

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE")

REDACTED = "[redacted]"

# Set by the hub's request middleware (perf_counter at request start). uvicorn writes its
# access line from inside the application's ``send`` call, i.e. in the request's context,
# so the access formatter can report the time to the response start.
request_started: ContextVar[float | None] = ContextVar("healthspace_request_started", default=None)

# Attributes every LogRecord carries; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}

# Keys whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|password|passwd|secret|authorization|api[_-]?key|cookie|credential)", re.I
)
# Secrets embedded in free text: bearer credentials, hub tokens, key=value pairs.
_SECRET_TEXT = [
    # "Bearer <credential>" (8+ characters, so prose such as "bearer of" survives); Basic
    # credentials are caught with their Authorization header below.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-…]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\bhs_[A-Za-z0-9_\-]{6,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b((?:access_|refresh_|api_|scrape_)?token|password|passwd|secret|api[_-]?key)"
            r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;]+)"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\n]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(://[^:/@\s]+:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
]


def redact_text(text: str) -> str:
    """``text`` with bearer tokens, hub tokens, passwords and URL credentials replaced."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    """A value safe to log under ``key``: secrets by name are dropped, text is scrubbed."""
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value("", v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Scrubs the message, its arguments and ``extra=`` fields of every record in place.

    Runs as a handler filter, so records from any library (uvicorn, httpx) are covered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # Keep uvicorn's positional args (the access formatters read them), scrubbed.
            record.args = tuple(
                redact_text(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = str(record.msg)
            record.msg, record.args = redact_text(message), ()
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set: the traceback is scrubbed once, here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        for key in list(vars(record)):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact_value(key, getattr(record, key)))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in doc:
                doc[key] = _jsonable(value)
        if record.exc_text:
            doc["exc_info"] = redact_text(record.exc_text)
        elif record.exc_info:
            doc["exc_info"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack_info"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


class UvicornAccessJsonFormatter(JsonFormatter):
    """uvicorn's access records as structured fields: client, method, path, status.

    uvicorn passes ``(client_addr, method, full_path, http_version, status_code)`` as the
    record's args; ``duration_ms`` (time to the response start) is added when the hub's
    request middleware recorded the start in :data:`request_started`.
    """

    def format(self, record: logging.LogRecord) -> str:
        started = request_started.get()
        if started is not None and not hasattr(record, "duration_ms"):
            record.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            record.client = client
            record.method = method
            record.path = path
            record.http_version = http_version
            try:
                record.status = int(str(status))
            except (TypeError, ValueError):
                record.status = status
        return super().format(record)


def validate_logging(level: str, fmt: str) -> tuple[str, str]:
    """Normalised ``(LEVEL, fmt)``, or InvalidInput naming ``log_level`` / ``log_format``."""
    if not isinstance(fmt, str) or fmt.lower() not in LOG_FORMATS:
        raise InvalidInput(
            f"unknown log format {fmt!r} (choose one of: {', '.join(LOG_FORMATS)})",
            field="log_format",
        )
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise InvalidInput(
            f"unknown log level {level!r} (choose one of: {', '.join(LOG_LEVELS).lower()})",
            field="log_level",
        )
    return level.upper(), fmt.lower()


def _numeric_level(level: str) -> int:
    return 5 if level == "TRACE" else logging.getLevelNamesMapping()[level]


def _text_handler(console: Any = None) -> logging.Handler:
    # Rich draws levels and times itself; imported lazily so servers need not load it.
    from rich.console import Console
    from rich.logging import RichHandler

    console = console if console is not None else Console(stderr=True, soft_wrap=True)
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def configure_logging(level: str = "INFO", fmt: str = "text", *, console: Any = None) -> None:
    """Point the root logger at stderr in ``fmt`` ("text" or "json") at ``level``.

    Replaces any handlers already installed, so calling it twice is harmless. ``console``
    (text only) is the Rich console to draw on, so log lines and progress bars share one.
    """
    level, fmt = validate_logging(level, fmt)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = _text_handler(console)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_numeric_level(level))
    # One line per outgoing request is noise at INFO; the callers log what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, _numeric_level(level)))


def uvicorn_log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``uvicorn.run(log_config=...)``.

    Text keeps uvicorn's familiar lines; JSON renders server and access records with the
    formatters above. The root logger is configured too, so the hub's own loggers share
    the format. Redaction is attached to every handler.
    """
    level, fmt = validate_logging(level, fmt)
    numeric = logging.getLevelName(_numeric_level(level)) if level != "TRACE" else 5
    filters = {"redact": {"()": "healthspace.core.logs.RedactingFilter"}}
    if fmt == "json":
        formatters: dict[str, Any] = {
            "default": {"()": "healthspace.core.logs.JsonFormatter"},
            "access": {"()": "healthspace.core.logs.UvicornAccessJsonFormatter"},
        }
    else:
        formatters = {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(name)s: %(message)s",
                "use_colors": None,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": None,
            },
        }
    handlers = {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": "default",
            "filters": ["redact"],
            "stream": "ext://sys.stderr",
        },
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "filters": ["redact"],
            "stream": "ext://sys.stderr",
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": formatters,
        "handlers": handlers,
        "root": {"handlers": ["default"], "level": numeric},
        "loggers": {
            "uvicorn": {"handlers": [], "level": numeric, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": numeric, "propagate": True},
            "uvicorn.access": {"handlers": ["access"], "level": numeric, "propagate": False},
            "httpx": {"level": "WARNING"},
        },
    }
