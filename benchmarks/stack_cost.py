"""What the OmniFM stack costs in training speed: images per second of each task's local fit with
the stack on (the recipe as shipped, retrieving from a full spectral bank) against the plain
backbone and head (``stack: null``, what the baselines train). Goal: at most 1.15x slower.

Each task's model and data come from its recipe, through the same CLI a user runs. A client's
local fit is a Lightning ``Trainer.fit`` on the first client's training data, as in a federated
round; a callback times each optimizer step (forward, task loss + SPAlign, backward, step) and
leaves out data loading, which is the same with and without the stack. The stack-on model
gets a bank filled to the federation's capacity, so retrieval costs what it costs in a late
round.

The speed of a shared machine drifts by 2x within seconds (a fixed convolution timed every
0.2 s for a minute here took 3.1 to 6.6 ms), so fits run one after the other compare the
machine's moments, not the models. The plain and the OmniFM fit therefore run side by side
in two threads and take turns, ``--block`` steps at a time (the other waits): one step on a
CPU, so each step of one has a step of the other beside it in time, and 5 on a GPU, where the
device is synchronised only at the ends of a block, so that the steps inside it overlap (the
host queues the next step while the GPU runs this one) as in any fit. Each variant's rate is
the median images per second over all its timed blocks of ``--repeats`` such paired fits.

Example:
    python benchmarks/stack_cost.py                                   # the five real-data recipes
    python benchmarks/stack_cost.py --tasks classification --steps 10 --repeats 1
    python benchmarks/stack_cost.py --data phantom --steps 2 --warmup 1 --repeats 1 \\
        --out /tmp/smoke.md --extra --model.init_args.embed_dim=16      # the smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
from _machine import available_cores  # benchmarks/_machine.py
from _report import RunRecord  # benchmarks/_report.py
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


class Turns:
    """Two fits in two threads take turns (the one whose turn it is not waits), so a shared
    machine's drifting speed hits both alike. ``pass_on`` hands the turn over and waits for it
    to come back; ``finish`` hands it over for good."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._turn, self._done = 0, [False, False]

    def wait(self, me: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == me or self._done[1 - me])

    def pass_on(self, me: int) -> None:
        with self._cond:
            self._turn = 1 - me
            self._cond.notify_all()
        self.wait(me)

    def finish(self, me: int) -> None:
        with self._cond:
            self._done[me], self._turn = True, 1 - me
            self._cond.notify_all()


class StepTimer(Callback):
    """Images per second of each block of ``block`` training steps after the first ``warmup``
    steps; the fit hands the turn to the other variant's fit after each block (and after each
    warm-up step). The device is synchronised only at the ends of a block, so on a GPU the
    steps inside a block overlap as they do in any fit."""

    def __init__(self, warmup: int, block: int, turns: Turns, me: int) -> None:
        self.warmup, self.block, self.turns, self.me = warmup, block, turns, me
        self.rates: list[float] = []
        self._open, self._first, self._start, self._images = False, 0, 0.0, 0

    def _sync(self, module: LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.turns.wait(self.me)

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, batch, idx) -> None:
        if not self._open:
            self._sync(module)
            self._open, self._first, self._images = True, trainer.global_step, 0
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, out, batch, idx):
        self._images += batch_images(batch)
        done = trainer.global_step  # steps finished, this one included
        if (
            done <= self.warmup
            or (done - self.warmup) % self.block == 0
            or done >= trainer.max_steps
        ):
            self._sync(module)
            if self._first >= self.warmup:
                self.rates.append(self._images / (time.perf_counter() - self._start))
            self._open = False
            self.turns.pass_on(self.me)


def batch_images(batch: dict[str, Any]) -> int:
    return next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))


def build(recipe: str, stack_on: bool, extra: list[str]) -> tuple[LightningModule, Any, Any]:
    """The recipe's model, first client's datamodule and federation config, via the CLI."""
    from omnifm.cli import OmniFMCLI

    # ``stack=null`` comes last, so an override of the stack's own arguments cannot bring it back
    args = ["--config", recipe, *extra, *([] if stack_on else ["--model.init_args.stack=null"])]
    cli = OmniFMCLI(args=args, run=False)
    data = cli.datamodule
    data.prepare_data()
    data.setup("fit")
    return cli.model, data.client_datamodule(data.client_names()[0]), cli.config["federation"]


def full_bank(model: Any, capacity: int, modalities: int = 3) -> Any:
    """The callback a client's Trainer gets, with a snapshot of a bank holding ``capacity``
    entries over ``modalities`` modalities."""
    from omnifm.bank import SpectralBank
    from omnifm.federated.callbacks import BankRetrieval

    dim = model.stack.spectral_dim
    bank = SpectralBank(dim, capacity=capacity, merge_threshold=None)
    gen = torch.Generator().manual_seed(0)
    per = capacity // modalities
    for m in range(modalities):
        bank.update(f"site{m}", f"modality{m}", torch.randn(per, dim, generator=gen), round=0)
    return BankRetrieval(bank.snapshot())


def paired_fit(recipe: str, args: argparse.Namespace) -> tuple[list[list[float]], list[int]]:
    """Images per second of each timed block, and the parameters, of the plain model (index 0)
    and the OmniFM model (index 1), each in its own ``Trainer.fit``; the two fits run side by
    side in two threads and take turns block by block."""
    turns, fits, errors = Turns(), [], []
    for stack_on in (False, True):
        model, datamodule, federation = build(recipe, stack_on, args.extra)
        callbacks: list[Any] = [timer := StepTimer(args.warmup, args.block, turns, int(stack_on))]
        if stack_on and model.stack is not None and model.stack.tokenizer is not None:
            callbacks.append(full_bank(model, federation.bank.capacity))
        trainer = Trainer(
            max_steps=args.warmup + args.steps,
            max_epochs=-1,
            accelerator="auto",
            devices=1,
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        fits.append((trainer, model, datamodule, timer))

    def fit(trainer: Trainer, model: LightningModule, datamodule: Any, timer: StepTimer) -> None:
        torch.set_num_threads(args.threads)  # per thread: the intra-op pool is thread-local
        try:
            trainer.fit(model, datamodule=datamodule)
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)
        finally:  # done or failed: the other fit no longer waits for this one
            turns.finish(timer.me)

    threads = [threading.Thread(target=fit, args=f) for f in fits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    rates = [timer.rates for *_, timer in fits]
    return rates, [sum(p.numel() for p in model.parameters()) for _, model, *_ in fits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--data", choices=["real", "phantom"], default="real")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per fit")
    parser.add_argument(
        "--block", type=int, default=None, help="steps per turn (default: 1 on CPU, 5 on GPU)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="paired fits (median)")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads")
    parser.add_argument("--out", default=str(HERE / "stack_cost.md"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more overrides")
    args = parser.parse_args()
    record = RunRecord.begin(__file__)
    args.block = args.block or (5 if torch.cuda.is_available() else 1)
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # recipes name data relative to the repository root
    rows = []
    for task in args.tasks:
        recipe = RECIPES[task][args.data == "phantom"]
        blocks: list[list[float]] = [[], []]  # every timed block's rate, per variant
        runs: list[list[float]] = [[], []]  # each fit's median block, to show the spread
        for _ in range(args.repeats):
            rates, params = paired_fit(recipe, args)
            for variant, fit_rates in enumerate(rates):
                blocks[variant] += fit_rates
                runs[variant].append(statistics.median(fit_rates))
        # medians, so a stall of the machine in a few steps does not move the result
        plain, omnifm = (statistics.median(b) for b in blocks)
        rows.append((task, recipe, plain, omnifm, plain / omnifm, params, runs))
        print(f"{task}: plain {plain:.1f} img/s, OmniFM {omnifm:.1f} img/s, {plain / omnifm:.3f}x")
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    lines = [
        "# OmniFM stack cost: training images per second, stack on against the plain backbone",
        "",
        f"Each fit: {args.warmup} untimed + {args.steps} timed steps on the first client's "
        f"training data ({args.data} data); the plain and the OmniFM fit run side by side and "
        f"take turns, {args.block} step(s) at a time; each variant's rate is the median images "
        f"per second over all its timed blocks of {args.repeats} such paired fits. "
        f"Slowdown = plain img/s / OmniFM img/s; goal at most {GOAL}x.",
        "",
        "| task | recipe | plain img/s | OmniFM img/s | slowdown | goal | params plain | "
        "params OmniFM | median of each fit, plain / OmniFM (img/s) |",
        "|---|---|---:|---:|---:|:---:|---:|---:|---|",
    ]
    for task, recipe, plain, omnifm, ratio, params, runs in rows:
        fits = " / ".join(", ".join(f"{x:.1f}" for x in r) for r in runs)
        lines.append(
            f"| {task} | `{recipe}` | {plain:.1f} | {omnifm:.1f} | {ratio:.3f}x | "
            f"{'met' if ratio <= GOAL else 'missed'} | {params[0]:,} | {params[1]:,} | "
            f"{fits} |"
        )
    lines += ["", *record.footer(threads=str(args.threads), device=device)]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
