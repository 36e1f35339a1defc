"""A federated client: its data, its personal state, and one local fit with a fresh Trainer."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.loggers import Logger
from torch import Tensor

from omnifm.bank import BankSnapshot
from omnifm.federated.callbacks import BankRetrieval, LocalRound, cpu_copy
from omnifm.federated.config import PrototypePrivacy, TrainingPrivacy
from omnifm.federated.dpsgd import PrivateTraining, poisson_sampled
from omnifm.federated.messages import EvaluateRes, FitIns, FitRes
from omnifm.federated.reporting import ClientLogger
from omnifm.federated.strategies import Strategy
from omnifm.functional import effective_rank, kmeans, private_centroids
from omnifm.tasks.base import OmniFMTask

__all__ = ["Client", "ClientFailure", "TrainerFactory", "token_spread"]

TrainerFactory = Callable[..., Trainer]


def token_spread(tokens: Tensor) -> dict[str, float]:
    """How spread a client's spectral tokens are: mean pairwise cosine and effective rank.

    Collapsed tokens (every image the same token) give cosine 1 and rank 1; these travel with
    the client's fit metrics, which hold no image-level data.
    """
    x = torch.nn.functional.normalize(tokens.double(), dim=-1)
    n = x.shape[0]
    total = x.sum(dim=0)
    cos = float((total @ total - n) / (n * (n - 1))) if n > 1 else 1.0
    return {"spectral/cos_within": cos, "spectral/erank": effective_rank(x)}


class ClientFailure(RuntimeError):
    """A client's round could not be used (it raised, or returned NaN/inf)."""


def _bank(state: dict[str, Any] | None) -> BankRetrieval:
    return BankRetrieval(BankSnapshot.from_state_dict(state) if state is not None else None)


def _finite(t: Tensor) -> bool:
    """No NaN or inf in ``t``: a finite sum proves it without a full mask (the common case)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _finite_all(tensors: dict[str, Tensor]) -> list[str]:
    return [k for k, v in tensors.items() if v.is_floating_point() and not _finite(v)]


@contextlib.contextmanager
def _detaching(model: OmniFMTask, datamodule: Any) -> Iterator[None]:
    """Drop, after a Trainer ran, the references Lightning leaves to it from the model and the
    client's datamodule. Through them a Trainer keeps its optimizer state (90 MB for ResNet-18
    with AdamW): every client that had trained kept its last one, so memory grew by that much
    per client (``benchmarks/scale.py`` found it)."""
    try:
        yield
    finally:
        model.trainer = None
        datamodule.trainer = None


def _scale_budget(trainer: Trainer, times: int) -> None:
    """``times`` the Trainer's local budget: its max_epochs and max_steps (where set)."""
    loop = trainer.fit_loop
    if times != 1:
        if loop.max_epochs is not None and loop.max_epochs > 0:
            loop.max_epochs *= times
        if loop.epoch_loop.max_steps > 0:
            loop.epoch_loop.max_steps *= times


class Client:
    """One hospital: a name, a modality tag, a datamodule, its personal state and its
    strategy's state (both kept across rounds, never sent).

    The model instance is not owned here: every client of a process loads its state into the
    same model, so memory per client is its personal and strategy tensors (on the CPU, or on
    disk past the federation's budget: ``omnifm.federated.store``) and a step counter.
    """

    def __init__(
        self,
        name: str,
        modality: str,
        datamodule: LightningDataModule,
        initial_personal: dict[str, Tensor] | None = None,
        privacy: PrototypePrivacy | None = None,
        dp_sgd: TrainingPrivacy | None = None,
    ) -> None:
        self.name = name
        self.modality = modality
        self.privacy = privacy  # this site's own setting: its uploads are private
        self.dp_sgd = dp_sgd  # and its training (the model was made private when built)
        self.datamodule = datamodule
        self.initial_personal = initial_personal or {}
        self.personal: dict[str, Tensor] | None = None
        self.strategy_state: dict[str, Tensor] = {}  # ``LocalRound.state`` between rounds
        self.steps = 0  # optimizer steps done so far, to continue TensorBoard curves

    @property
    def personal_state(self) -> dict[str, Tensor]:
        return self.personal if self.personal is not None else self.initial_personal

    def load(self, model: OmniFMTask, shared: dict[str, Tensor]) -> None:
        """Shared weights from the server plus this client's personal state, into ``model``."""
        model.load_state_dict({**shared, **self.personal_state}, strict=True)

    def fit(
        self,
        model: OmniFMTask,
        ins: FitIns,
        strategy: Strategy,
        make_trainer: TrainerFactory,
        logger: Logger | bool = False,
    ) -> FitRes:
        """Train locally from the round's shared weights; returns the shared part of the result.

        The strategy runs the local training (``Strategy.local_fit``): one or more fresh local
        Trainers, each with the federation's callbacks, the round's bank (``BankRetrieval``)
        and the strategy's; with ``dp_sgd``, Poisson-sampled batches and ``PrivateTraining``
        first (its steps, sample rate and noise go back in the metrics, for the server's
        accountant). Personal and strategy state change only if the round succeeds."""
        self.load(model, ins.weights)
        bank = _bank(ins.bank)
        seed_everything(ins.seed, workers=True, verbose=False)
        reseed = getattr(self.datamodule, "reseed", None)
        if callable(reseed):
            reseed(ins.seed)
        metrics: dict[str, float] = {}
        steps = 0
        data, rate, size = self.datamodule, 1.0, 0
        if self.dp_sgd is not None:
            data, rate, size = poisson_sampled(self.datamodule)
        private: list[PrivateTraining] = []

        def fit(callbacks: list[Callback], times: int = 1) -> Trainer:
            nonlocal steps
            if isinstance(logger, ClientLogger):  # every fit's curve follows the last one's
                logger.step_offset = self.steps + steps
            if self.dp_sgd is not None:
                private.append(PrivateTraining(self.dp_sgd, size))
            # the federation validates every client after aggregation, not inside local fits
            trainer = make_trainer(
                logger=logger,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                callbacks=[*private[-1:], bank, *callbacks],
            )
            _scale_budget(trainer, times)
            with _detaching(model, data):
                trainer.fit(model, datamodule=data)
            steps += trainer.global_step
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            return trainer

        local = LocalRound(model, ins.weights, ins.strategy, dict(self.strategy_state))
        strategy.local_fit(local, fit)
        if self.dp_sgd is not None:
            metrics.update(
                {
                    "privacy/dp_steps": float(sum(p.steps for p in private)),
                    "privacy/sample_rate": rate,
                    "privacy/noise_multiplier": self.dp_sgd.noise_multiplier,
                }
            )
        state = cpu_copy(model.state_dict())
        bad = _finite_all(state) + _finite_all(local.state) + _finite_all(local.upload)
        if bad:
            raise ClientFailure(f"client {self.name!r} produced non-finite weights in {bad[:3]}")
        if not all(map(torch.isfinite, map(torch.tensor, metrics.values()))):
            raise ClientFailure(f"client {self.name!r} produced non-finite metrics {metrics}")
        personal = set(self.initial_personal)
        self.personal = {k: state[k] for k in personal}
        self.strategy_state = local.state
        self.steps += steps
        ids, counts = bank.hits()
        tokens = self.spectral_tokens(model) if ins.prototypes else None
        if tokens is not None:
            metrics.update(token_spread(tokens))
        return FitRes(
            client=self.name,
            modality=self.modality,
            num_examples=self.num_examples("train"),
            weights={k: v for k, v in state.items() if k not in personal},
            metrics=metrics,
            prototypes=self.summarize(tokens, ins.prototypes, ins.seed, ins.bank)
            if tokens is not None
            else None,
            hit_ids=ids,
            hit_counts=counts,
            strategy=local.upload,
        )

    def evaluate(
        self,
        model: OmniFMTask,
        shared: dict[str, Tensor],
        bank: dict | None,
        make_trainer: TrainerFactory,
        stage: Literal["validate", "test"] = "validate",
        strategy: Strategy | None = None,
    ) -> EvaluateRes:
        """Metrics of the global shared weights plus this client's personal state, or of the
        model its strategy evaluates it with (``Strategy.evaluation_state``: Ditto's own)."""
        own = strategy.evaluation_state(self.strategy_state) if strategy is not None else None
        if own is not None:
            model.load_state_dict(own, strict=True)
        else:
            self.load(model, shared)
        trainer = make_trainer(logger=False, callbacks=[_bank(bank)])
        with _detaching(model, self.datamodule):
            results = getattr(trainer, stage)(model, datamodule=self.datamodule, verbose=False)
        split = "val" if stage == "validate" else "test"
        metrics = {k: float(v) for k, v in results[0].items()} if results else {}
        return EvaluateRes(self.name, self.num_examples(split), metrics)

    def prototypes(self, model: OmniFMTask, k: int, seed: int, max_images: int = 1024) -> Tensor:
        """The ``k`` prototypes (``summarize``) of the spectral tokens of (up to
        ``max_images``) training images: the bank warm-up's upload."""
        tokens = self.spectral_tokens(model, max_images) if k else None
        return torch.empty(0, 0) if tokens is None else self.summarize(tokens, k, seed)

    def summarize(
        self, tokens: Tensor, k: int, seed: int, bank: dict[str, Any] | None = None
    ) -> Tensor:
        """What this client uploads of its spectral ``tokens``: ``k`` k-means centroids; with
        ``privacy``, ``private_centroids`` from starts that do not depend on its data (the
        ``bank``'s entries of its modality, released before, then random directions), its
        noise drawn from the operating system's randomness, which no other party can redraw
        (so private uploads are not reproducible by design)."""
        if self.privacy is None:
            return kmeans(tokens, k, seed=seed)
        starts = torch.randn(k, tokens.shape[1], generator=torch.Generator().manual_seed(seed))
        if bank is not None:
            snapshot = BankSnapshot.from_state_dict(bank)
            own = [i for i, m in enumerate(snapshot.modalities) if m == self.modality][:k]
            starts[: len(own)] = snapshot.vectors[own].to(starts)
        noise = torch.Generator().manual_seed(secrets.randbits(63))
        p = self.privacy
        return private_centroids(tokens, starts, p.clip, p.noise_multiplier, noise)

    @torch.no_grad()
    def spectral_tokens(self, model: OmniFMTask, max_images: int = 1024) -> Tensor | None:
        """Spectral tokens ``(n, d)`` of up to ``max_images`` training images (eval mode)."""
        if model.stack is None or model.stack.tokenizer is None:
            return None
        was_training = model.training
        model.eval()
        tokens, seen = [], 0
        for batch in self._loader("train"):
            s = model.spectral_tokens(batch)
            tokens.append(s.cpu())
            seen += s.shape[0]
            if seen >= max_images:
                break
        model.train(was_training)
        return torch.cat(tokens)

    def num_examples(self, split: str) -> int:
        return len(self._loader(split).dataset)

    def _loader(self, split: str) -> Any:
        dm = self.datamodule
        dm.setup("fit" if split != "test" else "test")
        return {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[
            split
        ]()
