"""Commercial-insurance claim verification (商保快赔) against the payer's settled records.

An insurer holds claims — national id, visit date, diagnosis code, amount — and wants to know,
per claim, only whether the medical-insurance bureau settled that visit: ``match`` (same
visit, same amount), ``amount_mismatch`` (the visit exists, the amount differs) or
``no_match``. It holds no network key and sees no record. Two Diffie–Hellman PSIs in
membership mode (:mod:`healthspace.privacy.psi`) run between the insurer's client (the
receiver, which alone learns the answers) and the payer node's identity vault (the sender,
which learns only how many claims were checked):

* on the **visit key** ``national id | date | diagnosis``;
* on the **amount key** ``national id | date | diagnosis | amount in fen``.

A claim in both is a ``match``, in the first only an ``amount_mismatch``, else ``no_match``.
The client blinds its keys with fresh secret scalars before submitting; the payer node answers
in one round; the hub relays pseudorandom points and learns only the set sizes. The optional
``period`` (public) limits the payer's side to visits in those dates.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from healthspace.core.errors import InvalidInput
from healthspace.privacy.psi import PsiReceiver
from healthspace.privacy.psi_crypto import new_scalar
from healthspace.privacy.psi_wire import Mode

KEYS = ("visit", "amount")
OUTCOMES = ("match", "amount_mismatch", "no_match")
MAX_CLAIMS = 100_000


def fen(amount: Any) -> int:
    """An amount in CNY as integer fen, rounded half up (``12.345`` → 1235)."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise InvalidInput(f"{amount!r} is not an amount", field="amount") from None
    if not value.is_finite():
        raise InvalidInput(f"{amount!r} is not an amount", field="amount")
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def visit_key(national_id: str, day: date | str, diagnosis: str) -> str:
    return f"{str(national_id).strip().upper()}|{str(day)[:10]}|{str(diagnosis).strip().upper()}"


def amount_key(national_id: str, day: date | str, diagnosis: str, amount_fen: int) -> str:
    return f"{visit_key(national_id, day, diagnosis)}|{int(amount_fen)}"


@dataclass(frozen=True)
class Claim:
    claim_id: str
    national_id: str
    date: date
    diagnosis: str
    amount_fen: int

    @property
    def keys(self) -> tuple[str, str]:
        return (visit_key(self.national_id, self.date, self.diagnosis),
                amount_key(self.national_id, self.date, self.diagnosis, self.amount_fen))


def parse_claims(rows: Iterable[dict[str, Any]], source: str = "claims") -> list[Claim]:
    """Claims from rows with claim_id, national_id, date, diagnosis, amount; errors name the
    row and column."""
    claims, seen = [], set()
    for i, row in enumerate(rows, start=1):
        where = f"{source}[{i}]"

        def need(column: str, row: dict[str, Any] = row, where: str = where) -> str:
            value = str(row.get(column) or "").strip()
            if not value:
                raise InvalidInput(f"{where}: {column} is empty", field=f"{where}.{column}")
            return value

        claim_id = need("claim_id")
        if claim_id in seen:
            raise InvalidInput(f"{where}: claim_id {claim_id!r} repeats",
                               field=f"{where}.claim_id")
        seen.add(claim_id)
        try:
            day = date.fromisoformat(need("date"))
        except ValueError:
            raise InvalidInput(f"{where}: date {row.get('date')!r} is not an ISO date",
                               field=f"{where}.date") from None
        try:
            amount = fen(need("amount"))
        except InvalidInput:
            raise InvalidInput(f"{where}: amount {row.get('amount')!r} is not a number",
                               field=f"{where}.amount") from None
        claims.append(Claim(claim_id, need("national_id"), day, need("diagnosis"), amount))
        if len(claims) > MAX_CLAIMS:
            raise InvalidInput(f"at most {MAX_CLAIMS} claims per check", field=source)
    if not claims:
        raise InvalidInput("no claims to check", field=source)
    return claims


def read_claims(path: Path) -> list[Claim]:
    """Claims from a CSV file (claim_id, national_id, date, diagnosis, amount)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"claim_id", "national_id", "date", "diagnosis", "amount"} - set(
                reader.fieldnames or [])
            if missing:
                raise InvalidInput(f"{path} lacks column(s) {', '.join(sorted(missing))}",
                                   field="file")
            return parse_claims(reader, path.name)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="file") from None


def _b64(frames: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(f).decode("ascii") for f in frames]


def _frames(items: Any, field: str) -> list[bytes]:
    if not isinstance(items, list):
        raise InvalidInput("expected a list of PSI frames", field=field)
    try:
        return [base64.b64decode(item, validate=True) for item in items]
    except (TypeError, ValueError):
        raise InvalidInput("a PSI frame is not base64", field=field) from None


class ClaimChecker:
    """The insurer's side: blinds its claims' keys under fresh scalars (kept only in this
    object) and reads the payer's answer into one outcome per claim."""

    def __init__(self, claims: Sequence[Claim], group: str = "ed25519") -> None:
        self.claims = list(claims)
        self.group = group
        self._receivers = {
            name: PsiReceiver([c.keys[i] for c in self.claims], Mode.MEMBERSHIP, group=group,
                              scalar=new_scalar(group), workers=1)
            for i, name in enumerate(KEYS)}
        self._requests = {name: _b64(list(r.request_frames()))
                          for name, r in self._receivers.items()}

    def params(self, period: tuple[date, date] | None = None) -> dict[str, Any]:
        """The study parameters: the blinded keys, the group and the (public) period; by
        default the span of the claims' dates."""
        first, last = period or (min(c.date for c in self.claims),
                                 max(c.date for c in self.claims))
        return {"requests": self._requests, "group": self.group,
                "period": {"start": first.isoformat(), "end": last.isoformat()}}

    def outcomes(self, result: dict[str, Any]) -> list[dict[str, str]]:
        """One ``{claim_id, outcome}`` per claim, in the claims' order."""
        found: dict[str, set[str]] = {}
        for name, psi in self._receivers.items():
            try:
                for frame in _frames((result.get("offer") or {}).get(name), f"offer.{name}"):
                    psi.absorb_offer(frame)
                for frame in _frames((result.get("answers") or {}).get(name),
                                     f"answers.{name}"):
                    psi.absorb_answer(frame)
                found[name] = set(psi.result().members or [])
            finally:
                psi.close()
        rows = []
        for claim in self.claims:
            visit, amount = claim.keys
            outcome = ("match" if amount in found["amount"] else
                       "amount_mismatch" if visit in found["visit"] else "no_match")
            rows.append({"claim_id": claim.claim_id, "outcome": outcome})
        return rows

    def close(self) -> None:
        for psi in self._receivers.values():
            psi.close()
