"""Benchmark the memory of OmniFM's federation per client: peak RSS against the client count.

For each client count, a fresh subprocess (``_memory_worker.py``) builds a federation of tiny
phantom clients (OmniFM strategy, personal head + PSP suffix), opens the run (``start``), runs
the bank warm-up (``warmup``) and a few rounds (``fit_round``) with about ``--per-round``
clients each, each followed by ``checkpoint``, and reports its RSS after setup and warm-up, its
peak RSS (``ru_maxrss`` and ``VmHWM``) and the bytes of the clients' personal states. The
memory per extra client is the difference of the peaks of the smallest and the largest count
over the difference of the counts; goal: at most a client's personal state plus 1 MB.

The parent imports neither torch nor the library and runs nothing but the workers, so it stays
small: on Linux a child's ``ru_maxrss`` starts at the RSS of the process that launched it
(``VmHWM`` does not).

Example:
    python benchmarks/federation_memory.py --client-counts 10 100 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _report import RunRecord  # benchmarks/_report.py

WORKER = Path(__file__).resolve().with_name("_memory_worker.py")
GOAL_EXTRA_BYTES = 1_000_000  # per extra client, on top of its personal state (1 MB = 1e6 B)
MB = 1e6


def run_memory(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """One worker subprocess per client count; their JSON rows."""
    rows = []
    for n in args.client_counts:
        cmd = [sys.executable, str(WORKER), "--clients", str(n), "--rounds", str(args.rounds)]
        cmd += ["--per-round", str(args.per_round), "--threads", str(args.threads)]
        cmd += ["--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"memory worker for {n} clients failed:\n{proc.stdout}{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"  {n:>5} clients: peak RSS {row['peak_rss'] / MB:8.1f} MB, warm-up "
            f"{row['warmup_s']:.1f} s, rounds {row['rounds_s']:.1f} s",
            flush=True,
        )
    return rows


def per_client_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The memory per extra client (largest against smallest count) and the goal."""
    lo, hi = rows[0], rows[-1]
    extra = hi["clients"] - lo["clients"]
    per_client = (hi["peak_rss"] - lo["peak_rss"]) / extra
    per_hwm = (hi["vm_hwm"] - lo["vm_hwm"]) / extra
    per_setup = (hi["rss_setup"] - lo["rss_setup"]) / extra
    budget = hi["personal_state_bytes"] + GOAL_EXTRA_BYTES
    met = "met" if max(per_client, per_hwm) <= budget else "**not met**"
    lines = [
        "",
        f"Per extra client = (peak({hi['clients']:,}) - peak({lo['clients']:,})) / "
        f"{extra:,} = **{per_client / 1e3:,.1f} kB** by ru_maxrss, "
        f"{per_hwm / 1e3:,.1f} kB by VmHWM (RSS after setup: {per_setup / 1e3:,.1f} kB). "
        f"Goal: personal state + 1 MB = {hi['personal_state_bytes']:,} B + 1,000,000 B = "
        f"{budget / 1e3:,.1f} kB: **{met}**. Bank warm-up: "
        f"{1e3 * hi['warmup_s'] / hi['clients']:.1f} ms per client at "
        f"{hi['clients']:,} clients ({hi['warmup_s']:.1f} s).",
    ]
    if any(abs(r["peak_rss"] - r["vm_hwm"]) > 0.02 * r["vm_hwm"] for r in rows if r["vm_hwm"]):
        lines += [
            "",
            "Note: ru_maxrss and VmHWM differ by more than 2% somewhere: Linux carries the "
            "RSS of the launching process into a child's ru_maxrss across fork/exec, so "
            "VmHWM is the cleaner number here.",
        ]
    return lines


def memory_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [
        "## Memory per client",
        "",
        f"Each client count in a fresh subprocess: tiny phantom clients (8 train / 4 val / 4 test "
        f"images, 16x16, batch 8), backbone `test_resnet`, embed_dim 16, OmniFM strategy "
        f"(personal: head + PSP suffix), default bank settings with warm-up, "
        f"{args.rounds} round(s) of about {args.per_round} clients with max_steps 1, "
        "a checkpoint after each round, no evaluation. Peak RSS: `ru_maxrss` of the subprocess "
        "and `VmHWM` (/proc/self/status) beside it; imports and model are included in both and "
        "cancel in the difference. 'own personal states': clients that have trained and hold "
        "their own personal tensors; the others share the server's initial personal state "
        "(one set of tensors), so 'distinct' counts each storage once and 'summed' adds "
        "`client.personal_state` over all clients as if each had its own.",
        "",
        "| clients | trained per round | RSS after setup (MB) | RSS after warm-up (MB) "
        "| peak RSS ru_maxrss (MB) | VmHWM (MB) | personal state per client (B) "
        "| own personal states | personal tensors, distinct (B) "
        "| personal_state summed over clients (B) | bank entries | setup (s) | warm-up (s) "
        "| rounds (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']:,} | {r['per_round']} | {r['rss_setup'] / MB:.1f} "
            f"| {r['rss_warmup'] / MB:.1f} | {r['peak_rss'] / MB:.1f} | {r['vm_hwm'] / MB:.1f} "
            f"| {r['personal_state_bytes']:,} | {r['with_own_personal']} "
            f"| {r['personal_distinct_bytes']:,} | {r['personal_all_bytes']:,} "
            f"| {r['bank_entries']} | {r['setup_s']:.1f} | {r['warmup_s']:.1f} "
            f"| {r['rounds_s']:.1f} |"
        )
    return lines + (per_client_lines(rows) if len(rows) >= 2 else [])


INTRO = (
    "Peak memory of OmniFM's in-process federation against its number of clients. Goal: memory "
    "per extra client at most its personal state plus 1 MB."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--client-counts",
        type=int,
        nargs="+",
        default=[10, 100, 1000],
        help="client counts, one subprocess each",
    )
    p.add_argument("--per-round", type=int, default=10, help="clients per round (about)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = p.parse_args(argv)
    if min(args.per_round, args.rounds, args.threads, *args.client_counts) < 1:
        p.error("--client-counts, --per-round, --rounds and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = RunRecord.begin(__file__, argv)
    print(f"library: git {record.git_start}; load {record.load_start}")
    print("memory: one subprocess per client count", flush=True)
    with tempfile.TemporaryDirectory(prefix="omnifm-fed-memory-") as tmp:
        rows = run_memory(args, Path(tmp))
    title, body = "Federation overhead: memory per client", memory_tables(rows, args)
    device = rows[0]["device"]  # as the workers saw it
    record.write(args.out, title, INTRO, body, threads=str(args.threads), device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
