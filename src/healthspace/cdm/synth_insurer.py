"""A commercial insurer's claims (商保) to verify against the payer's settlements, with truth.

:class:`InsurerSample` keeps a uniform sample of the payer's visits while the chunks are
written; :meth:`InsurerSample.write` turns it into ``claims.csv``: 60 % exact copies
(``match``), 20 % with the amount raised by 5-40 % (``amount_mismatch``) and 20 % the payer has
no record of (``no_match``: half a real person's visit moved by 1-30 days, half under a
national id outside the network). About a quarter of the sampled visits are inpatient. Only
visits whose (national id, date, principal diagnosis) is unique among the payer's are used, so
each expected verdict is unambiguous.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa

from healthspace.cdm.synth_events import IP
from healthspace.cdm.synth_tables import Chunk
from healthspace.cdm.synth_vocab import CODES

EXPECTED = ("match", "amount_mismatch", "no_match")
CLAIM_COLUMNS = ("claim_id", "national_id", "date", "diagnosis", "amount")
INPATIENT_SHARE = 0.25
_OVERSAMPLE = 20  # visits kept per claim: room for the ambiguous ones and the inpatient quota
_DAY_SPAN = 1_000_000
_FIELDS = ("key", "national_id", "day", "kind", "code", "fen", "same", "moved_onto", "shift")

Row = tuple[str, str, str, str, str]  # national id, date, diagnosis, amount, expected


class InsurerSample:
    """The ``size`` payer visits with the smallest random keys over all chunks: a uniform
    sample without replacement, in random order, whatever the number of chunks."""

    def __init__(self, claims: int) -> None:
        self.claims = claims
        self.size = _OVERSAMPLE * claims + 100
        types = {"key": np.float64, "national_id": object}
        self._kept = {f: np.zeros(0, dtype=types.get(f, np.int64)) for f in _FIELDS}

    def add(self, rng: np.random.Generator, c: Chunk, vid: np.ndarray) -> None:
        """Offer the payer's visits of chunk ``c`` (``vid`` >= 0 marks those it holds)."""
        v = c.visits
        held = np.flatnonzero(vid >= 0)
        key, shift = rng.random(len(held)), rng.integers(1, 31, len(held)) * rng.choice(
            np.array([-1, 1]), len(held))
        order = np.argsort(key, kind="stable")[:self.size]
        keep = held[order]
        # (person, day, principal diagnosis): a person's visits all sit in one chunk.
        codes = len(CODES) + 1
        case = np.sort((v.person[held] * _DAY_SPAN + v.start[held]) * codes + v.dx[held])
        mine = (v.person[keep] * _DAY_SPAN + v.start[keep]) * codes + v.dx[keep]
        moved = mine + shift[order] * codes
        part = {
            "key": key[order],
            "national_id": c.national_id.take(pa.array(v.person[keep])).to_numpy(
                zero_copy_only=False),
            "day": v.start[keep], "kind": v.kind[keep], "code": v.dx[keep],
            "fen": c.total[keep], "shift": shift[order],
            "same": np.searchsorted(case, mine, "right") - np.searchsorted(case, mine, "left"),
            "moved_onto": np.searchsorted(case, moved, "right")
            - np.searchsorted(case, moved, "left"),
        }
        both = {f: np.concatenate([self._kept[f], part[f]]) for f in _FIELDS}
        best = np.argsort(both["key"], kind="stable")[:self.size]
        self._kept = {f: x[best] for f, x in both.items()}

    def write(self, folder: Path, truth: Path, rng: np.random.Generator,
              outsiders: np.ndarray) -> dict[str, int]:
        """Write ``folder/claims.csv`` and ``truth/insurer_claims.csv``; return verdict counts.

        ``outsiders`` holds at least ``claims`` valid national ids of persons outside the
        network.
        """
        n = self.claims
        n_match, n_amount = round(0.6 * n), round(0.2 * n)
        n_moved = (n - n_match - n_amount) // 2
        k = self._kept
        usable = np.flatnonzero(k["same"] == 1)
        real = n_match + n_amount
        inpatient = usable[k["kind"][usable] == IP][:round(INPATIENT_SHARE * real)]
        others = np.setdiff1d(usable, inpatient, assume_unique=True)
        chosen = np.r_[inpatient, others[:real - len(inpatient)]]
        rest = np.setdiff1d(usable, chosen, assume_unique=True)
        moved = rest[k["moved_onto"][rest] == 0][:n_moved]
        if len(chosen) < real or len(moved) < n_moved:
            raise ValueError(f"the payer holds too few visits for {n} insurer claims; "
                             "generate more persons or ask for fewer claims")
        chosen = rng.permutation(chosen)
        raised = np.round(k["fen"][chosen[n_match:]] * (1 + rng.uniform(0.05, 0.40, n_amount)))
        spare = np.setdiff1d(rest, moved, assume_unique=True)
        spare = spare if len(spare) else usable
        borrowed = spare[np.arange(n - real - n_moved) % len(spare)]
        rows = (self._rows(chosen[:n_match], k["fen"][chosen[:n_match]], "match")
                + self._rows(chosen[n_match:], raised, "amount_mismatch")
                + self._rows(moved, k["fen"][moved], "no_match", k["shift"][moved])
                # Outsiders borrow a real visit's day, diagnosis and amount: only the person
                # is unknown to the payer.
                + self._rows(borrowed, k["fen"][borrowed], "no_match",
                             national_id=outsiders[:len(borrowed)]))
        return _write(folder, truth, [rows[i] for i in rng.permutation(len(rows))])

    def _rows(self, idx: np.ndarray, fen: np.ndarray, expected: str,
              shift: np.ndarray | None = None, national_id: np.ndarray | None = None) \
            -> list[Row]:
        k = self._kept
        days = k["day"][idx] + (0 if shift is None else shift)
        dates = days.astype("datetime64[D]").astype(str)
        ids = k["national_id"][idx] if national_id is None else national_id
        return [(str(nid), str(day), CODES[int(code)][1], f"{int(f) // 100}.{int(f) % 100:02d}",
                 expected) for nid, day, code, f in zip(ids, dates, k["code"][idx], fen,
                                                        strict=True)]


def _write(folder: Path, truth: Path, rows: list[Row]) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(rows))))
    ids = [f"C{i:0{width}d}" for i in range(1, len(rows) + 1)]
    with open(folder / "claims.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLAIM_COLUMNS)
        writer.writerows((cid, *row[:4]) for cid, row in zip(ids, rows, strict=True))
    with open(truth / "insurer_claims.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("claim_id", "expected"))
        writer.writerows((cid, row[4]) for cid, row in zip(ids, rows, strict=True))
    return {verdict: sum(row[4] == verdict for row in rows) for verdict in EXPECTED}
