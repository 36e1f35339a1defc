"""One federation of tiny clients, measured in its own process for ``federation_memory.py``.

Builds ``--clients`` tiny phantom clients and a ``Federation`` (OmniFM strategy), opens the run
(``start``), warms the bank up (``warmup``) and runs ``--rounds`` rounds (``fit_round``, then
``checkpoint``) of about ``--per-round`` clients; prints one JSON line: RSS after setup and
warm-up, peak RSS (``ru_maxrss`` and ``VmHWM``), the clients' personal bytes and the seconds of
each phase.

    python benchmarks/_memory_worker.py --clients 100 --rounds 2 --per-round 10 --out /tmp/runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _federation import (  # benchmarks/_federation.py
    NO_EVAL,
    NO_LOCAL_VAL,
    device_name,
    make_data,
    pick_device,
    quiet_lightning,
    trainer_device,
)
from lightning.pytorch import seed_everything

from omnifm.blocks import OmniFMStack
from omnifm.datamodules import PhantomDataModule
from omnifm.federated import Federation, FederationConfig, OmniFM
from omnifm.tasks import ClassificationTask


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def high_water_bytes() -> int:
    """``VmHWM``: the peak RSS of this process image only (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def current_rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tensor_bytes(states: list[dict[str, torch.Tensor]]) -> int:
    """Bytes of the distinct tensor storages in ``states`` (shared storages counted once)."""
    seen: dict[int, int] = {}
    for state in states:
        for t in state.values():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def tiny_federation(n: int, args: argparse.Namespace, device: torch.device) -> Federation:
    """``n`` clients of 8 train / 4 val / 4 test 16x16 images (batch 8), ``test_resnet`` with
    embed_dim 16 and a small stack, OmniFM strategy, about ``per_round`` clients a round of
    one local step each, no evaluation."""
    data = make_data(n, 8, 16, 8, num_val=4, num_test=4)

    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1, top_k=4)

    seed_everything(0, verbose=False)
    model = ClassificationTask(
        num_classes=PhantomDataModule.num_classes,
        in_channels=1,
        backbone="test_resnet",
        embed_dim=16,
        stack=factory,
    )
    config = FederationConfig(
        rounds=args.rounds,
        participation=min(1.0, args.per_round / n),
        strategy=OmniFM(),
        eval_every=NO_EVAL,
        output=args.out,
        name=f"memory-{n}",
    )
    trainer = {"max_steps": 1, **trainer_device(device), **NO_LOCAL_VAL}
    return Federation(model, data, config, trainer)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One federation of ``args.clients`` tiny clients; its RSS, peak RSS and personal bytes."""
    n = args.clients
    device = pick_device()
    torch.set_num_threads(args.threads)
    base_rss = current_rss_bytes()
    start = time.perf_counter()
    with quiet_lightning():
        run = tiny_federation(n, args, device)
        setup = time.perf_counter() - start
        run.start()
        rss_setup = current_rss_bytes()
        start = time.perf_counter()
        if run.server.bank is not None and run.config.bank.warmup:
            run.warmup()
        warmup = time.perf_counter() - start
        rss_warmup = current_rss_bytes()
        start = time.perf_counter()
        trained = 0
        for round_ in range(1, args.rounds + 1):
            run.fit_round(round_)
            run.checkpoint()
            trained += len(run.server.sampler.history[-1])
        rounds = time.perf_counter() - start
    states = [c.personal_state for c in run.clients.values()]
    own = [c.personal for c in run.clients.values() if c.personal is not None]
    return {
        "clients": n,
        "per_round": run.server.sampler.per_round,
        "trained": trained,
        "with_own_personal": len(own),
        "personal_state_bytes": tensor_bytes([run.server.initial_personal]),
        "personal_all_bytes": sum(t.nbytes for s in states for t in s.values()),
        "personal_distinct_bytes": tensor_bytes(states),
        "bank_entries": len(run.server.bank) if run.server.bank is not None else 0,
        "base_rss": base_rss,
        "rss_setup": rss_setup,
        "rss_warmup": rss_warmup,
        "rss_end": current_rss_bytes(),
        "peak_rss": peak_rss_bytes(),
        "vm_hwm": high_water_bytes(),
        "setup_s": setup,
        "warmup_s": warmup,
        "rounds_s": rounds,
        "device": device_name(device),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--per-round", type=int, default=10, help="clients per round (about)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", required=True, help="the federation's output folder")
    print(json.dumps(measure(p.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
