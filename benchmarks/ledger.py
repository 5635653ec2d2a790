"""Benchmark: audit ledger append rate and full verification time at 1,000,000 entries.

SqliteLedgerStore (the node backend; WAL, synchronous=NORMAL), a checkpoint every 1,000
entries. Single appends go through ``Ledger.append`` (one short transaction each) for the first
``--single`` entries; the rest are appended in bulk with ``append_many`` (1,000 per
transaction, checkpointed after each batch). Then one full ``verify``.
Targets: ≥ 5,000 appends/s; verify < 20 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nacl.signing import SigningKey
from rich.console import Console
from rich.table import Table

from healthspace.core.clock import iso
from healthspace.ledger.checkpoint import key_id
from healthspace.ledger.entry import make_entry, payload_digest
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.sqlite_store import SqliteLedgerStore
from healthspace.ledger.verify import verify

console = Console()
APPEND_TARGET = 5_000.0
VERIFY_TARGET = 20.0


def single_appends(ledger: Ledger, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        ledger.append("node:bench", "task.run", f"study:{i // 100}/round:1/task:{i}", {"i": i})
    return n / (time.perf_counter() - t)


def bulk_appends(ledger: Ledger, store: SqliteLedgerStore, total: int, batch: int) -> float:
    head = store.last_entry()
    assert head is not None
    seq, prev = head.seq, head.hash
    start = seq
    t = time.perf_counter()
    while seq < total:
        now = iso(ledger.clock.now())
        run = []
        for _ in range(min(batch, total - seq)):
            seq += 1
            digest = payload_digest({"i": seq})
            entry = make_entry(seq, now, "node:bench", "task.run",
                               f"study:{seq // 100}/round:1/task:{seq}", digest, prev)
            run.append(entry)
            prev = entry.hash
        store.append_many(run)
        ledger.checkpoint()
    return (seq - start) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=50_000, help="entries appended one by one")
    parser.add_argument("--every", type=int, default=1_000, help="checkpoint interval")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    path = root / "state.sqlite"
    path.unlink(missing_ok=True)
    key = SigningKey.generate()
    store = SqliteLedgerStore(path)
    ledger = Ledger(store, owner="bench", signing_key=key, checkpoint_every=args.every)

    single = single_appends(ledger, args.single)
    console.print(f"single appends: {single:,.0f}/s over {args.single:,}")
    bulk = bulk_appends(ledger, store, args.entries, args.every)
    console.print(f"bulk appends: {bulk:,.0f}/s up to {args.entries:,}")
    t = time.perf_counter()
    report = verify(store, [key_id(key)])
    verify_s = time.perf_counter() - t
    assert report.ok, report

    table = Table(title=f"audit ledger at {report.entries:,} entries, "
                        f"{report.checkpoints:,} checkpoints ({path.stat().st_size / 1e6:,.0f} MB)")
    for column in ("measure", "value", "target", "met"):
        table.add_column(column)

    def row(name: str, value: str, target: str, met: bool) -> None:
        table.add_row(name, value, target, "[green]met[/]" if met else "[red]not met[/]")

    row(f"single appends (first {args.single:,})", f"{single:,.0f}/s", "≥ 5,000/s",
        single >= APPEND_TARGET)
    row("bulk appends (append_many)", f"{bulk:,.0f}/s", "≥ 5,000/s", bulk >= APPEND_TARGET)
    row("full verify", f"{verify_s:.1f} s", "< 20 s", verify_s < VERIFY_TARGET)
    console.print(table)
    store.close()


if __name__ == "__main__":
    main()
