"""Benchmark: two-party DH-PSI throughput against the raw scalar-multiplication rate of its group.

``--group ed25519`` (default) or ``x25519``. Measures, in one run, (1) the raw rate of the group's
primitive on one core in a single-process loop — ``crypto_scalarmult_ed25519_noclamp`` on
hashed points (libsodium, called as the kernels call it; it validates each input point), or X25519
``exchange`` on a loaded public key — and (2) the end-to-end protocol with the receiver and the
sender each in its own process (each with a worker pool of ``os.cpu_count()`` processes),
frames relayed as bytes over a pipe as the hub will relay them. "Per core" means per CPU-second
of a party (its process plus its workers). Each party does two scalar multiplications per id
(its own ids once, the peer's ids once), so the primitive's limit is raw_rate / 2 ids/s per
core. Target: ratio ≥ 0.8.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import crypto_scalarmult_ed25519_noclamp
from rich.console import Console
from rich.table import Table

from healthspace.privacy import psi_crypto
from healthspace.privacy.psi import Mode, PsiReceiver, PsiSender
from healthspace.privacy.psi_crypto import Group, hash_to_point, hash_to_u, new_scalar

console = Console()


def raw_rate(group: Group, ops: int) -> float:
    """Scalar multiplications per CPU-second of the group's primitive in a one-process loop."""
    if group is Group.ED25519:  # the C call as the kernels make it (the strictest limit)
        scalar, points = new_scalar(group), [hash_to_point(str(i)) for i in range(1000)]
        if psi_crypto._lib is None:
            mul = crypto_scalarmult_ed25519_noclamp
            t = time.process_time()
            for i in range(ops):
                mul(scalar, points[i % 1000])
            return ops / (time.process_time() - t)
        out, c_mul = psi_crypto._ffi.new("unsigned char[]", 32), (
            psi_crypto._lib.crypto_scalarmult_ed25519_noclamp)
        t = time.process_time()
        for i in range(ops):
            c_mul(out, scalar, points[i % 1000])
        return ops / (time.process_time() - t)
    key = X25519PrivateKey.from_private_bytes(os.urandom(32))
    peers = [X25519PublicKey.from_public_bytes(hash_to_u(str(i))) for i in range(1000)]
    exchange = key.exchange
    t = time.process_time()
    for i in range(ops):
        exchange(peers[i % 1000])
    return ops / (time.process_time() - t)


def ids(start: int, n: int) -> Iterator[str]:
    return (f"NID{i:010d}" for i in range(start, start + n))


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _stats(cpu0: float, wall0: float, **extra: Any) -> bytes:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.dumps({"cpu": _cpu() - cpu0, "wall": time.perf_counter() - wall0,
                       "rss_mb": own / 1024, "worker_rss_mb": kids / 1024, **extra}).encode()


def sender_main(conn: Connection, report: Connection, start: int, n: int, mode: int,
                batch: int, group: int) -> None:
    cpu0, wall0 = _cpu(), time.perf_counter()
    sender = PsiSender(ids(start, n), Mode(mode), batch_size=batch, assume_distinct=True,
                       group=Group(group))
    relayed = 0
    for frame in sender.blinded_frames():
        conn.send_bytes(frame)
        relayed += len(frame)
    while not sender.done:
        for reply in sender.answer(conn.recv_bytes()):
            conn.send_bytes(reply)
            relayed += len(reply)
    sender.close()  # joins the workers, so their CPU time is in RUSAGE_CHILDREN
    report.send_bytes(_stats(cpu0, wall0, relayed=relayed))


def receiver_main(conn: Connection, report: Connection, n: int, mode: int, batch: int,
                  group: int) -> None:
    cpu0, wall0 = _cpu(), time.perf_counter()
    receiver = PsiReceiver(ids(0, n), Mode(mode), batch_size=batch, assume_distinct=True,
                           group=Group(group))
    while not receiver.offers_complete:
        receiver.absorb_offer(conn.recv_bytes())
    relayed = 0
    for frame in receiver.request_frames():
        conn.send_bytes(frame)
        relayed += len(frame)
        if receiver.mode is Mode.MEMBERSHIP:  # answered batch by batch; read before sending more
            receiver.absorb_answer(conn.recv_bytes())
    while not receiver.done:
        receiver.absorb_answer(conn.recv_bytes())
    result = receiver.result()
    receiver.close()
    report.send_bytes(_stats(cpu0, wall0, relayed=relayed, size=result.size,
                           members=None if result.members is None else len(result.members)))


def run_parties(n: int, overlap: float, mode: Mode, batch: int,
                group: Group) -> tuple[dict, dict, float]:
    shared = int(n * overlap)
    ctx = mp.get_context("fork")
    r_end, s_end = ctx.Pipe()
    r_in, r_out = ctx.Pipe(duplex=False)
    s_in, s_out = ctx.Pipe(duplex=False)
    wall = time.perf_counter()
    rp = ctx.Process(target=receiver_main, args=(r_end, r_out, n, int(mode), batch, int(group)))
    sp = ctx.Process(target=sender_main, args=(s_end, s_out, n - shared, n, int(mode), batch,
                                                int(group)))
    rp.start()
    sp.start()
    receiver, sender = json.loads(r_in.recv_bytes()), json.loads(s_in.recv_bytes())
    rp.join()
    sp.join()
    return receiver, sender, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.1, help="shared fraction")
    parser.add_argument("--mode", choices=["size", "membership"], default="size")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--group", choices=["ed25519", "x25519"], default="ed25519")
    parser.add_argument("--raw-ops", type=int, default=None,
                        help="primitive calls per raw-rate bracket (default ≈ 1 s of work)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary last")
    args = parser.parse_args()
    mode = Mode.SIZE if args.mode == "size" else Mode.MEMBERSHIP
    group = Group[args.group.upper()]
    raw_ops = args.raw_ops or (6_000 if group is Group.ED25519 else 30_000)
    raw = raw_rate(group, raw_ops)
    receiver, sender, wall = run_parties(args.ids, args.overlap, mode, args.batch, group)
    raw_after = raw_rate(group, raw_ops)  # bracket the run: other jobs may share the machine
    raw = max(raw, raw_after)
    total_ids, cpu = 2 * args.ids, receiver["cpu"] + sender["cpu"]
    per_core = total_ids / cpu
    limit = raw / 2
    ratio = per_core / limit
    expected = int(args.ids * args.overlap)
    table = Table(title=f"DH-PSI over {args.group}, {args.ids:,} ids per party, mode {args.mode}, "
                        f"{os.cpu_count()} cores")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"raw {args.group} mults/s/core (best of 2 brackets)", f"{raw:,.0f}")
    table.add_row("limit: ids/s/core (raw / 2)", f"{limit:,.0f}")
    for name, st in (("receiver", receiver), ("sender", sender)):
        table.add_row(f"{name} ids/s/core ({st['cpu']:.1f} CPU-s, {st['wall']:.1f} s wall)",
                      f"{args.ids / st['cpu']:,.0f}")
        table.add_row(f"{name} peak RSS MB (main / largest worker)",
                      f"{st['rss_mb']:.0f} / {st['worker_rss_mb']:.0f}")
        table.add_row(f"{name} bytes sent (relayed by the hub)", f"{st['relayed']:,}")
    table.add_row("PSI ids/s per core (both parties)", f"{per_core:,.0f}")
    table.add_row("ratio to primitive limit (target ≥ 0.8)", f"{ratio:.3f}")
    table.add_row("end-to-end wall seconds", f"{wall:.1f}")
    ok = receiver["size"] == expected and receiver["members"] in (None, expected)
    table.add_row("intersection size (true overlap)", f"{receiver['size']:,} ({expected:,}) "
                  f"{'OK' if ok else 'WRONG'}")
    console.print(table)
    if args.json:
        print(json.dumps({"ids_per_s_per_core": round(per_core, 1),
                          "ratio_to_primitive_limit": round(ratio, 4), "group": args.group}))
    if not ok:
        raise SystemExit("intersection size does not match the true overlap")


if __name__ == "__main__":
    main()
