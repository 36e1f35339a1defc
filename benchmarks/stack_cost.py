"""What the OmniFM stack costs in training speed: images per second of each task's local fit with
the stack on (the recipe as shipped, retrieving from a full spectral bank) against the plain
backbone and head (``stack: null``, what the baselines train). Goal: at most 1.15x slower.

Each task's model and data come from its recipe, through the same CLI a user runs. A client's
local fit is a Lightning ``Trainer.fit`` on the first client's training data, as in a federated
round; a callback times each optimizer step (forward, task loss + SPAlign, backward, step) and
leaves out data loading, which is the same with and without the stack. The stack-on model gets
a bank filled to the federation's capacity, so retrieval costs what it costs in a late round.
Stack on and off alternate, ``--repeats`` times each, and the median is reported.

Example:
    python benchmarks/stack_cost.py                                   # the five real-data recipes
    python benchmarks/stack_cost.py --tasks classification --steps 10 --repeats 1
    python benchmarks/stack_cost.py --data phantom --steps 2 --warmup 1 --repeats 1 \\
        --out /tmp/smoke.md --extra --model.init_args.embed_dim=16      # the smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _machine import available_cores, cpu_model, load_average  # benchmarks/_machine.py
from lightning.pytorch import Callback, LightningModule, Trainer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# task -> (recipe on the real data in ../shared/data, recipe on generated phantoms)
RECIPES: dict[str, tuple[str, str]] = {
    "classification": ("recipes/classification.yaml", "recipes/quickstart.yaml"),
    "segmentation": ("recipes/segmentation.yaml", "recipes/segmentation_phantom.yaml"),
    "super_resolution": ("recipes/super_resolution.yaml", "recipes/super_resolution_phantom.yaml"),
    "vqa": ("recipes/vqa.yaml", "recipes/vqa_phantom.yaml"),
    "fusion": ("recipes/fusion.yaml", "recipes/fusion_phantom.yaml"),
}
GOAL = 1.15


class StepTimer(Callback):
    """Seconds and images of each training step after the first ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seconds, self.images = warmup, 0.0, 0
        self._start = 0.0

    def _sync(self, module: LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, batch, idx) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, out, batch, idx):
        self._sync(module)
        if trainer.global_step > self.warmup:
            self.seconds += time.perf_counter() - self._start
            self.images += batch_images(batch)


def batch_images(batch: dict[str, Any]) -> int:
    return next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))


def build(recipe: str, stack_on: bool, extra: list[str]) -> tuple[LightningModule, Any, Any]:
    """The recipe's model, first client's datamodule and federation config, via the CLI."""
    from omnifm.cli import OmniFMCLI

    args = ["--config", recipe, *([] if stack_on else ["--model.init_args.stack=null"]), *extra]
    cli = OmniFMCLI(args=args, run=False)
    data = cli.datamodule
    data.prepare_data()
    data.setup("fit")
    return cli.model, data.client_datamodule(data.client_names()[0]), cli.config["federation"]


def full_bank(model: Any, capacity: int, modalities: int = 3) -> None:
    """Attach a snapshot of a bank holding ``capacity`` entries over ``modalities`` modalities."""
    from omnifm.bank import SpectralBank

    dim = model.stack.spectral_dim
    bank = SpectralBank(dim, capacity=capacity, merge_threshold=None)
    gen = torch.Generator().manual_seed(0)
    per = capacity // modalities
    for m in range(modalities):
        bank.update(f"site{m}", f"modality{m}", torch.randn(per, dim, generator=gen), round=0)
    model.bank = bank.snapshot()


def images_per_second(recipe: str, stack_on: bool, args: argparse.Namespace) -> tuple[float, int]:
    model, datamodule, federation = build(recipe, stack_on, args.extra)
    if stack_on and model.stack is not None and model.stack.tokenizer is not None:
        full_bank(model, federation.bank.capacity)
    timer = StepTimer(args.warmup)
    trainer = Trainer(
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    params = sum(p.numel() for p in model.parameters())
    return timer.images / timer.seconds, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--data", choices=["real", "phantom"], default="real")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="fits per variant (median)")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads")
    parser.add_argument("--out", default=str(HERE / "stack_cost.md"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # recipes name data relative to the repository root
    started, total = dt.datetime.now(dt.UTC), time.perf_counter()
    rows = []
    for task in args.tasks:
        recipe = RECIPES[task][args.data == "phantom"]
        runs: dict[bool, list[float]] = {False: [], True: []}
        params: dict[bool, int] = {}
        for _ in range(args.repeats):
            for stack_on in (False, True):  # alternate, so drifting load hits both alike
                ips, params[stack_on] = images_per_second(recipe, stack_on, args)
                runs[stack_on].append(ips)
        plain, omnifm = (statistics.median(runs[k]) for k in (False, True))
        rows.append((task, recipe, plain, omnifm, plain / omnifm, params, runs))
        print(f"{task}: plain {plain:.1f} img/s, OmniFM {omnifm:.1f} img/s, {plain / omnifm:.3f}x")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lines = [
        "# OmniFM stack cost: training images per second, stack on against the plain backbone",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/stack_cost.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {cpu_model()}, {available_cores()} cores usable, device {device}, torch "
        f"threads {args.threads}; load average at the end {load_average()}; started "
        f"{started:%Y-%m-%d %H:%M} UTC; wall time {(time.perf_counter() - total) / 60:.1f} min.",
        "",
        f"Each fit: {args.warmup} untimed + {args.steps} timed steps on the first client's "
        f"training data ({args.data} data), median of {args.repeats} fits per variant. "
        f"Slowdown = plain img/s / OmniFM img/s; goal at most {GOAL}x.",
        "",
        "| task | recipe | plain img/s | OmniFM img/s | slowdown | goal | params plain | "
        "params OmniFM | all fits plain / OmniFM (img/s) |",
        "|---|---|---:|---:|---:|:---:|---:|---:|---|",
    ]
    for task, recipe, plain, omnifm, ratio, params, runs in rows:
        fits = " / ".join(", ".join(f"{x:.1f}" for x in runs[k]) for k in (False, True))
        lines.append(
            f"| {task} | `{recipe}` | {plain:.1f} | {omnifm:.1f} | {ratio:.3f}x | "
            f"{'met' if ratio <= GOAL else 'missed'} | {params[False]:,} | {params[True]:,} | "
            f"{fits} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
