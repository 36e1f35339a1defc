"""Benchmark ``SpectralBank.retrieve`` against brute-force numpy and faiss exact search.

For each bank size, the same L2-normalised prototypes and the same queries go to

* ours: ``SpectralBank.retrieve(queries, k)`` (query normalisation, chunked cosine top-k and
  the gather of vectors and ids, i.e. the whole public call);
* numpy: normalise queries, ``q @ keys.T``, ``argpartition`` and a sort of the top ``k``;
* faiss: ``faiss.IndexFlatIP`` over the normalised keys, normalise queries, ``index.search``.

All three run with the same number of threads and are timed in the same run (each: pause,
warm-up, then the median of its repeats). Each is checked against a float64 reference: its
top-``k`` must have the reference's similarities within a float tolerance (ties may pick
different ids). Results go to a markdown file (see ``--out``).

Example:
    python benchmarks/bank_retrieval.py --sizes 1000 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import available_cores  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py

try:
    from omnifm.bank import SpectralBank
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from omnifm.bank import SpectralBank

try:
    import faiss
except ImportError:
    faiss = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

# similarities are float32 dot products of unit vectors; this absorbs their rounding
SIM_ATOL = 1e-5
METHODS = ("ours", "numpy", "faiss")
SETTLE_S = 0.5  # pause before timing each method, see time_each


def default_repeats(n: int) -> int:
    """Fewer repeats for big banks so the whole run stays within a few minutes."""
    if n <= 10_000:
        return 30
    if n <= 100_000:
        return 10
    return 5


def env_vars() -> str:
    names = ("OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    names += ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in names)


def set_threads(threads: int) -> str:
    """Give torch, faiss and numpy's BLAS the same thread count; describe what was set."""
    torch.set_num_threads(threads)
    notes = [f"torch {torch.get_num_threads()}"]
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
        notes.append(f"faiss (OpenMP) {faiss.omp_get_max_threads()}")
    if threadpool_limits is not None:
        # limits every BLAS loaded in the process (numpy's OpenBLAS and faiss' own)
        threadpool_limits(limits=threads, user_api="blas")
        notes.append(f"numpy BLAS {threads} (threadpoolctl)")
    else:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        notes.append(
            f"numpy BLAS not set (threadpoolctl missing): {env or 'its default, all cores'}"
        )
    return ", ".join(notes)


def normalise_np(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_topk(keys: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = normalise_np(queries) @ keys.T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def reference_topk(keys: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Exact top-``k`` similarities in float64 (chunked), the yardstick for all three."""
    q = F.normalize(queries.double(), dim=-1)
    best = torch.full((q.shape[0], k), -torch.inf, dtype=torch.float64)
    for start in range(0, keys.shape[0], 65536):
        sims = q @ keys[start : start + 65536].double().T
        best = torch.cat([best, sims.topk(min(k, sims.shape[1]), dim=1).values], 1).topk(k).values
    return best


def check(keys: torch.Tensor, queries: torch.Tensor, ids: np.ndarray, ref: torch.Tensor) -> bool:
    """Distinct ids whose float64 similarities, sorted, equal the reference top-``k``."""
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    if (ids_t < 0).any() or any(len(set(row)) != len(row) for row in ids_t.tolist()):
        return False
    q = F.normalize(queries.double(), dim=-1)
    sims = torch.einsum("bkd,bd->bk", keys[ids_t].double(), q).sort(dim=1, descending=True)
    return bool(torch.allclose(sims.values, ref, rtol=0.0, atol=SIM_ATOL))


def time_each(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """ms per call, one method after the other (pause, warm-up, then its repeats).

    Not interleaved: the BLAS/OpenMP thread pools of numpy and faiss keep spinning for a while
    after a call (OpenBLAS up to ~0.1 s), which would steal the cores from whichever method
    runs next; the pause lets the previous method's pool go to sleep first.
    """
    times: dict[str, list[float]] = {}
    for name, fn in fns.items():
        time.sleep(SETTLE_S)
        for _ in range(warmup):
            fn()
        times[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def run_size(n: int, args: argparse.Namespace) -> list[dict]:
    """Check the three methods at bank size ``n``, then time them at each thread count."""
    g = torch.Generator().manual_seed(n)
    bank = SpectralBank(dim=args.dim, capacity=n, merge_threshold=None)
    bank.update("bench", "synthetic", torch.randn(n, args.dim, generator=g), round=0)
    # bank ids are 0..n-1 in insertion order, so positions and ids coincide
    assert torch.equal(bank.ids, torch.arange(n))
    keys = bank.vectors  # the bank's own L2-normalised float32 prototypes, shared by all
    keys_np = keys.numpy()
    queries = torch.randn(args.queries, args.dim, generator=g)
    queries_np = queries.numpy()

    fns: dict[str, Callable[[], object]] = {
        "ours": lambda: bank.retrieve(queries, args.k),
        "numpy": lambda: numpy_topk(keys_np, queries_np, args.k),
    }
    if faiss is not None:
        index = faiss.IndexFlatIP(args.dim)
        index.add(keys_np)

        def faiss_search() -> np.ndarray:
            q = np.array(queries_np, dtype=np.float32, copy=True)
            faiss.normalize_L2(q)
            return index.search(q, args.k)[1]

        fns["faiss"] = faiss_search

    results = {"ours": fns["ours"]()[1].numpy(), **{m: fns[m]() for m in fns if m != "ours"}}
    ref = reference_topk(keys, queries, args.k)
    correct = {name: check(keys, queries, ids, ref) for name, ids in results.items()}
    same_sets = {
        name: sum(set(a) == set(b) for a, b in zip(results["ours"], ids, strict=True))
        for name, ids in results.items()
        if name != "ours"
    }
    repeats = args.repeats or default_repeats(n)
    rows = []
    for threads in args.threads:
        set_threads(threads)
        times = time_each(fns, repeats, warmup=args.warmup)
        rows.append(
            {
                "n": n,
                "threads": threads,
                "repeats": repeats,
                "ms": {name: statistics.median(t) for name, t in times.items()},
                "min_ms": {name: min(t) for name, t in times.items()},
                "correct": correct,
                "same_sets": same_sets,
            }
        )
    return rows


def ratio(row: dict, other: str) -> str:
    ms = row["ms"]
    return f"{ms['ours'] / ms[other]:.2f}" if other in ms else "n/a"


def fmt_ms(row: dict, name: str, key: str = "ms") -> str:
    return f"{row[key][name]:.2f}" if name in row[key] else "n/a"


def table(rows: list[dict], b: int) -> list[str]:
    lines = [
        "| prototypes | ours (ms) | numpy (ms) | faiss IndexFlatIP (ms) | ours/faiss | ours/numpy "
        "| min ms ours / numpy / faiss | repeats | top-k correct (ours/numpy/faiss) "
        "| same id sets as ours (numpy, faiss) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|",
    ]
    for row in rows:
        ok = "/".join(
            ("yes" if row["correct"][m] else "NO") if m in row["correct"] else "n/a"
            for m in METHODS
        )
        same = ", ".join(
            f"{row['same_sets'][m]}/{b}" if m in row["same_sets"] else "n/a"
            for m in ("numpy", "faiss")
        )
        mins = " / ".join(fmt_ms(row, m, "min_ms") for m in METHODS)
        lines.append(
            f"| {row['n']:,} | {fmt_ms(row, 'ours')} | {fmt_ms(row, 'numpy')} "
            f"| {fmt_ms(row, 'faiss')} | {ratio(row, 'faiss')} | {ratio(row, 'numpy')} "
            f"| {mins} | {row['repeats']} | {ok} | {same} |"
        )
    return lines


def markdown(rows: list[dict], args: argparse.Namespace, record: RunRecord) -> str:
    k, b = args.k, args.queries
    lines = [
        "# Bank retrieval benchmark",
        "",
        f"Top-{k} retrieval for {b} queries (dim {args.dim}): ms per batch of {b} queries, "
        "median of the repeats after warm-up, each method timed on its own after a short pause "
        "(lower is better); ratios are of medians, below 1 means ours is faster.",
    ]
    for threads in args.threads:
        lines += ["", f"## {threads} thread(s) each", "", f"Threads: {args.notes[threads]}", ""]
        lines += table([r for r in rows if r["threads"] == threads], b)
    lines += [
        "",
        "What is timed: ours is the full `SpectralBank.retrieve(queries, k)` call (query "
        "normalisation, chunked cosine top-k, gather of vectors and ids); numpy normalises the "
        "queries, multiplies, `argpartition`s and sorts the top k; faiss normalises a copy of "
        "the queries and calls `IndexFlatIP.search`. Same keys, queries, k and threads for all. "
        f"'top-k correct' means the similarities of the returned ids match a float64 "
        f"brute-force top-{k} within {SIM_ATOL:g} (ties may pick different ids).",
        "",
        *record.footer(
            threads=", ".join(map(str, args.threads)) + " (torch, numpy and faiss alike)",
            versions=("numpy", "faiss"),
            notes=[f"environment (left as found): {env_vars()}"],
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--k", type=int, default=8)
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats (default: 30/30/10/5 by size)"
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[available_cores()],
        help="threads for torch, numpy and faiss alike (default: all cores); several values "
        "give one table each",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = RunRecord.begin(__file__, argv)
    if faiss is None:
        print("faiss is not installed (pip install faiss-cpu): skipping the faiss column")
    args.notes = {t: set_threads(t) for t in args.threads}
    rows = []
    for n in args.sizes:
        if n < args.k:
            raise SystemExit(f"--sizes must be at least --k ({args.k}), got {n}")
        for row in run_size(n, args):
            rows.append(row)
            ms = ", ".join(f"{name} {t:.2f} ms" for name, t in row["ms"].items())
            print(
                f"N={n:>9,} threads={row['threads']}: {ms} | ours/faiss {ratio(row, 'faiss')}, "
                f"ours/numpy {ratio(row, 'numpy')} | top-{args.k} correct {row['correct']} "
                f"| same sets as ours {row['same_sets']}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args, record))
    agree = all(all(row["correct"].values()) for row in rows)
    print(f"all methods return the same top-{args.k} (within {SIM_ATOL:g}): {agree}")
    print(f"wrote {args.out} in {record.wall():.1f} s")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
