"""Error types that carry a field path and map to HTTP status codes and CLI exit codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from healthspace.core.enums import ExitCode


class HealthspaceError(Exception):
    """Base class: a message meant for the user, an HTTP status and an exit code."""

    status_code = 400
    exit_code = ExitCode.ERROR

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"message": self.message}
        if self.field:
            detail["field"] = self.field
        return detail

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInput(HealthspaceError):
    """The user's input is malformed or inconsistent (HTTP 422, exit 2)."""

    status_code = 422
    exit_code = ExitCode.INVALID


class NotFound(HealthspaceError):
    status_code = 404
    exit_code = ExitCode.INVALID


class Conflict(HealthspaceError):
    status_code = 409
    exit_code = ExitCode.INVALID


class Unauthorized(HealthspaceError):
    status_code = 401
    exit_code = ExitCode.DENIED


class Forbidden(HealthspaceError):
    status_code = 403
    exit_code = ExitCode.DENIED


class QuotaExceeded(HealthspaceError):
    """A study would cost more than the consumer's prepaid quota and credit allow (HTTP 402)."""

    status_code = 402
    exit_code = ExitCode.DENIED


class Refused(HealthspaceError):
    """A node refuses a computation (policy, disclosure, consent)."""

    status_code = 403
    exit_code = ExitCode.DENIED


class IngestError(HealthspaceError):
    """An ingest failed; names the file, row and column where it could."""

    exit_code = ExitCode.INVALID

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column}" if column else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.column = file, row, column


def field_path(loc: Sequence[str | int], prefix: Sequence[str | int] = ()) -> str:
    """Render a pydantic location tuple as ``a.b[0].c``."""
    out = ""
    for part in (*prefix, *loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def invalid_from_validation(
    exc: ValidationError, prefix: Sequence[str | int] = ()
) -> InvalidInput:
    """Turn a pydantic ValidationError into an InvalidInput naming the first bad field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = field_path(first["loc"], prefix)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidInput(f"{first['msg']}{more}", field=path)
