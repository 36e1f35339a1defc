"""Differentially private local training (DP-SGD) with Opacus.

``private_model`` makes a task trainable with DP-SGD when the federation builds it (Opacus'
``ModuleValidator``: batch norm becomes group norm, ``nn.MultiheadAttention`` Opacus' own), so
the server and every site hold the same architecture. During a local fit, ``PrivateTraining``
replaces each step's gradient by the DP-SGD one: per-example gradients of the task's
``objective``, which Opacus' ``DPOptimizer`` clips to ``max_grad_norm``, sums and noises
(``noise_multiplier`` times the clip) before the optimizer steps; ``poisson_sampled`` draws the
batches the way the accountant assumes (Opacus' ``DPDataLoader``). The server adds up what each
client spent (``PrivacyLedger``).

Per-example gradients come from ``torch.func`` (``vmap`` over ``grad`` of the whole objective)
rather than Opacus' module hooks: the hooks are full backward hooks, which refuse the in-place
operations of timm's residual blocks (``x += shortcut``) and cover only the layer types Opacus
knows, where OmniFM's stack has parameters used directly (prompts). Each step therefore runs
the usual backward (for the logged loss) and the per-example one (three times the first with
the quickstart's model), plus one gradient per example in memory. A loss that ``vmap`` cannot
run (one that reads tensor values in Python) is differentiated example by example instead.

Opacus is imported inside the functions: importing it calls ``logging.basicConfig``, which
would leave the CLI's own logging setup without effect.
"""

from __future__ import annotations

import copy
import logging
import secrets
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from omnifm.blocks.tokenizer import SpectralStandardize
from omnifm.federated.config import TrainingPrivacy
from omnifm.tasks.hooks import loss_terms

__all__ = ["PrivateTraining", "poisson_sampled", "private_model"]


def private_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that DP-SGD can train: each module Opacus' ``ModuleValidator`` has
    a fixer for replaced (batch norm by group norm, ``nn.MultiheadAttention`` by
    ``DPMultiheadAttention``). ``ValueError`` naming each module that still cannot be trained
    privately, and why.

    The fixers are applied to a ``deepcopy`` rather than through ``ModuleValidator.fix``,
    which copies by pickling: a task built from a recipe holds its optimizer as a callable
    that does not pickle."""
    from opacus.validators import ModuleValidator

    fixed = copy.deepcopy(model)
    opacus = logging.getLogger("opacus")  # not a line per module it replaces
    level = opacus.level
    opacus.setLevel(logging.WARNING)
    try:
        for name, module in list(fixed.named_modules()):
            fixer = ModuleValidator.FIXERS.get(type(module))
            if fixer is not None and name:
                parent, _, child = name.rpartition(".")
                tensors = [*module.parameters(), *module.buffers()]
                replacement = fixer(module).to(tensors[0].device if tensors else None)
                fixed.get_submodule(parent).add_module(child, replacement)
    finally:
        opacus.setLevel(level)
    errors = [str(e) for e in ModuleValidator.validate(fixed, strict=False)]
    # what Opacus' fixers miss: subclasses of batch norm (timm's BatchNormAct2d), which
    # normalise over the batch and learn running statistics from the images
    errors += [
        f"{name} ({type(m).__name__}) normalises over the batch; Opacus replaces only "
        "torch's own batch norm classes"
        for name, m in fixed.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if errors:
        raise ValueError(
            f"federation.dp_sgd: {type(model).__name__} cannot be trained with DP-SGD: "
            f"{'; '.join(errors[:3])}. Replace those modules in the task (group norm instead "
            "of batch norm) or train without dp_sgd"
        )
    return fixed


def running_statistics(model: nn.Module) -> list[nn.Module]:
    """Modules whose training forward updates statistics of the data (buffers that would
    leave the site outside DP-SGD's guarantee): kept in eval mode while training privately."""
    return [
        m
        for m in model.modules()
        if isinstance(m, SpectralStandardize)
        or (isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats)
    ]


class _Objective(nn.Module):
    """The task's training loss as a module's forward, for ``functional_call``: loss terms
    (FedProx's proximal term) then see the per-example parameters too."""

    def __init__(self, task: Any, bank: Any, terms: list[Any]) -> None:
        super().__init__()
        self.task, self.bank, self.terms = task, bank, terms

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.task.objective(batch, self.bank, self.terms)[0]


def per_example_gradients(
    task: Any, batch: dict[str, Any], bank: Any = None, terms: list[Any] | None = None
) -> dict[str, Tensor]:
    """Gradient of ``task.objective`` of each example of ``batch`` (run as a batch of one),
    by trainable parameter name, each ``(batch_size, *parameter.shape)``.

    ``torch.func.vmap`` over ``grad`` computes them together; a loss that reads tensor
    values in Python (segmentation's check of the mask's class indices, ``.item()``) cannot
    be vmapped, and is differentiated one example after the other instead (slower, the same
    gradients)."""
    objective = _Objective(task, bank, terms or [])
    params = {n: p for n, p in objective.named_parameters() if p.requires_grad}
    size = next(v.shape[0] for v in batch.values() if isinstance(v, Tensor))
    batched = {k: v for k, v in batch.items() if isinstance(v, Tensor) and v.shape[:1] == (size,)}
    rest = {k: v for k, v in batch.items() if k not in batched}
    if size == 0:  # an empty Poisson batch: its sum of clipped gradients is zero
        return {n[len("task.") :]: p.new_zeros(0, *p.shape) for n, p in params.items()}
    frozen = [m for m in running_statistics(task) if m.training]
    for m in frozen:  # their statistics are not the examples' to update
        m.eval()
    try:
        try:
            grads = _vmapped(objective, params, batched, rest)
        except RuntimeError as err:
            if "vmap" not in str(err) and "data-dependent" not in str(err):
                raise
            grads = _looped(objective, params, batched, rest, size)
    finally:
        for m in frozen:
            m.train()
    return {n[len("task.") :]: g for n, g in grads.items()}


def _vmapped(
    objective: _Objective, params: dict[str, Tensor], batched: dict[str, Tensor], rest: dict
) -> dict[str, Tensor]:
    buffers = dict(objective.named_buffers())

    def loss(weights: dict[str, Tensor], example: dict[str, Tensor]) -> Tensor:
        one = {**rest, **{k: v.unsqueeze(0) for k, v in example.items()}}
        return functional_call(objective, {**weights, **buffers}, (one,))

    detached = {n: p.detach() for n, p in params.items()}
    return vmap(grad(loss), in_dims=(None, 0), randomness="different")(detached, batched)


def _looped(
    objective: _Objective,
    params: dict[str, Tensor],
    batched: dict[str, Tensor],
    rest: dict,
    size: int,
) -> dict[str, Tensor]:
    grads: dict[str, list[Tensor]] = {n: [] for n in params}
    with torch.enable_grad():
        for i in range(size):
            one = {**rest, **{k: v[i : i + 1] for k, v in batched.items()}}
            got = torch.autograd.grad(objective(one), list(params.values()), allow_unused=True)
            for (n, p), g in zip(params.items(), got, strict=True):
                grads[n].append(torch.zeros_like(p) if g is None else g)
    return {n: torch.stack(g) for n, g in grads.items()}


class PrivateTraining(Callback):
    """DP-SGD for one local fit (the first callback of the Trainer, so that strategies that
    edit gradients, SCAFFOLD's correction, work on the private gradient).

    Before each optimizer step, the per-example gradients of the batch go to Opacus'
    ``DPOptimizer.pre_step`` over the Trainer's optimizer (clip, sum, Gaussian noise, mean over
    the expected batch size), which leaves the private gradient in ``.grad``; the optimizer
    then steps as usual. The noise comes from the operating system's randomness, which no
    other party can redraw. ``steps`` counts the private steps for the accountant."""

    def __init__(self, privacy: TrainingPrivacy, batch_size: int) -> None:
        self.privacy = privacy
        self.batch_size = batch_size  # expected: the noise is averaged over it
        self.steps = 0
        self._batch: dict[str, Any] | None = None
        self._dp: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from opacus.optimizers import DPOptimizer

        if len(trainer.optimizers) != 1 or trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "federation.dp_sgd needs one optimizer and accumulate_grad_batches 1; this "
                f"task has {len(trainer.optimizers)} and {trainer.accumulate_grad_batches}"
            )
        device = pl_module.device
        noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
        self._dp = DPOptimizer(
            trainer.optimizers[0],
            noise_multiplier=self.privacy.noise_multiplier,
            max_grad_norm=self.privacy.max_grad_norm,
            expected_batch_size=self.batch_size,
            loss_reduction="mean",
            generator=noise,
        )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        for module in running_statistics(pl_module):
            module.eval()
        self._batch = batch

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        assert self._batch is not None and self._dp is not None
        terms = loss_terms(trainer.callbacks)
        grads = per_example_gradients(pl_module, self._batch, pl_module.current_bank(), terms)
        params = dict(pl_module.named_parameters())
        self._dp.zero_grad(set_to_none=True)
        for name, g in grads.items():
            params[name].grad_sample = g
        self._dp.pre_step()  # clipped, summed, noised, averaged: into every .grad
        for p in params.values():
            p.grad_sample = None
            p.summed_grad = None
        self._batch = None
        self.steps += 1


class _PoissonSampled(LightningDataModule):
    """A client's datamodule whose training batches Opacus' ``DPDataLoader`` draws: every
    example independently with probability batch size over dataset size."""

    def __init__(self, datamodule: LightningDataModule) -> None:
        super().__init__()
        self.inner = datamodule

    def setup(self, stage: str) -> None:
        self.inner.setup(stage)

    def train_dataloader(self) -> Any:
        from opacus.data_loader import DPDataLoader

        return DPDataLoader.from_data_loader(self.inner.train_dataloader())

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_after_batch_transfer(batch, dataloader_idx)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.inner.on_before_batch_transfer(batch, dataloader_idx)


def poisson_sampled(datamodule: LightningDataModule) -> tuple[LightningDataModule, float, int]:
    """``datamodule`` with Poisson-sampled training batches, their sample rate and expected
    size (as Opacus' ``DPDataLoader.from_data_loader`` and ``make_private`` set them: one over
    the batches of an epoch)."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    rate = 1.0 / len(loader)
    return _PoissonSampled(datamodule), rate, max(1, int(len(loader.dataset) * rate))
