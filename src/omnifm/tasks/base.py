"""``OmniFMTask``: the LightningModule every OmniFM task builds on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection

from omnifm.blocks import OmniFMStack, Retriever, StackOutput
from omnifm.tasks.hooks import LossTerm, loss_terms, retriever

__all__ = ["Encoded", "OmniFMTask", "StackFactory"]

StackFactory = Callable[[int], OmniFMStack]
Batch = dict[str, Any]
Mode = Literal["min", "max"]
GROUPS = ("encoder", "stack", "head", "personal")


class Encoded(NamedTuple):
    """What ``encode`` returns: tokens for the stack and what ``decode`` needs besides them
    (a U-Net's skip maps, shallow features): passed through return values, never ``self``."""

    tokens: Tensor  # (B, L, embed_dim)
    features: Any = None


class OmniFMTask(LightningModule):
    """Encoder -> OmniFM stack (GSKR, ECA, PSP, SPAlign) -> head, with torchmetrics per stage.

    A task subclass builds ``self.encoder`` and ``self.head`` in its ``__init__`` after calling
    ``super().__init__(...)``, calls ``self.set_metrics(...)``, sets the class attributes
    ``monitor`` (its main metric, without the stage prefix) and ``mode`` (``max`` or ``min``),
    and implements the hooks:

    - ``encode(batch) -> tokens (B, L, embed_dim)`` or ``Encoded(tokens, features)``: default
      ``self.encoder(batch["image"])``; ``features`` is whatever ``decode`` needs besides the
      stack's output (skip maps), handed over by return value;
    - ``decode(out, batch, features) -> predictions``: default ``self.head(out.suffix)``;
    - ``task_loss(preds, batch) -> scalar``: required;
    - ``update_metrics(metrics, preds, batch)``: default ``metrics.update(preds, batch["label"])``.

    Retrieval, ECA, PSP, SPAlign (weighted by ``spalign_weight``) and logging live here once.
    The task declares what a federation needs to know (``parameter_groups``, ``monitor`` and
    ``mode``, ``metric_modes``) and never learns that it is federated: the bank to retrieve
    from and a strategy's loss terms come from callbacks of the running Trainer
    (``omnifm.tasks.hooks``), and the retrieved entry ids leave ``training_step`` in its output.

    Args:
        embed_dim: token size shared by encoder, stack and head.
        stack: builds the OmniFM stack from ``embed_dim`` (in YAML: ``class_path:
            omnifm.blocks.OmniFMStack`` with its ``init_args``); ``None`` for a plain backbone
            and head, as the classic federated baselines use.
        spalign_weight: lambda of the SPAlign term added to the training loss.
        optimizer: optimizer factory, LightningCLI style (``class_path`` + ``init_args``).
        recalibrate_bn: before a standalone validate or test, re-estimate batch-norm running
            statistics of the current weights on the datamodule's training data (one forward
            pass, no gradients). A few local steps at a high learning rate, or weights averaged
            across modalities, otherwise leave them stale or foreign to the client, and
            evaluation in eval mode collapses to one class.
        recalibrate_batches: re-estimate on at most this many training batches (the first, in
            a fixed order); ``None``: all of them. A few hundred images give the statistics
            to within noise; a large client saves most of its evaluation time with e.g. 8.

    Example: a task omnifm does not ship, regressing an image's mean brightness::

        class BrightnessRegression(OmniFMTask):
            def __init__(self, in_channels: int = 1, backbone: str = "resnet18", **kwargs):
                super().__init__(**kwargs)  # embed_dim, stack, spalign_weight, optimizer, ...
                self.encoder = TimmTokenEncoder(backbone, in_channels, self.embed_dim)
                self.head = nn.Linear(self.embed_dim, 1)
                self.set_metrics(MetricCollection({"mae": MeanAbsoluteError()}))

            def target(self, batch):
                return batch["image"].mean(dim=(1, 2, 3))

            def task_loss(self, preds, batch):
                return F.mse_loss(preds.squeeze(-1), self.target(batch))

            def update_metrics(self, metrics, preds, batch):
                metrics.update(preds.squeeze(-1), self.target(batch))

            monitor, mode = "mae", "min"  # the main metric, lower is better

        # recipe: model: {class_path: my_package.BrightnessRegression, init_args: {...}}
        # then: omnifm fit --config my_recipe.yaml (in_channels is linked from the data)
    """

    monitor: ClassVar[str] = "loss"  # main metric without the stage prefix (val/..., test/...)
    mode: ClassVar[Mode] = "min"  # whether a higher (max) or lower (min) ``monitor`` is better

    def __init__(
        self,
        embed_dim: int = 256,
        stack: StackFactory | None = OmniFMStack,
        spalign_weight: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        recalibrate_bn: bool = True,
        recalibrate_batches: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["stack", "optimizer"])
        self.embed_dim = embed_dim
        self.stack = stack(embed_dim) if stack is not None else None
        if self.stack is not None and getattr(self.stack, "spalign", False) and spalign_weight <= 0:
            raise ValueError(
                f"spalign_weight={spalign_weight} (model.init_args.spalign_weight) switches "
                "SPAlign off while the stack's spalign flag is on: set it > 0 (0.1 in the "
                "recipes), or ablate SPAlign on purpose with the stack's spalign=false"
            )
        self.spalign_weight = spalign_weight
        self.optimizer = optimizer
        if recalibrate_batches is not None and recalibrate_batches < 1:
            raise ValueError(
                f"recalibrate_batches must be >= 1 or null (all batches), got {recalibrate_batches}"
            )
        self.recalibrate_bn = recalibrate_bn
        self.recalibrate_batches = recalibrate_batches
        self.set_metrics(MetricCollection({}))  # a task adds its own with set_metrics

    def check_spatial_dims(self, spatial_dims: int) -> None:
        """One clear error when the stack's spectral tokenizer reads images of other dims."""
        tokenizer = self.stack.tokenizer if self.stack is not None else None
        if tokenizer is not None and tokenizer.spatial_dims != spatial_dims:
            raise ValueError(
                f"the stack's spatial_dims ({tokenizer.spatial_dims}) must equal the task's "
                f"({spatial_dims}); set stack.init_args.spatial_dims"
            )

    # hooks --------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Tensor | Encoded:
        return self.encoder(batch["image"])

    def decode(self, out: StackOutput, batch: Batch, features: Any = None) -> Tensor:
        return self.head(out.suffix)

    def task_loss(self, preds: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement task_loss")

    def update_metrics(self, metrics: MetricCollection, preds: Tensor, batch: Batch) -> None:
        metrics.update(preds, batch["label"])

    def spectral_input(self, batch: Batch) -> Tensor:
        """The image the spectral token is computed from."""
        return batch["image"]

    # shared machinery ---------------------------------------------------------------------
    def set_metrics(self, metrics: MetricCollection) -> None:
        """Clone ``metrics`` for the train, val and test stages."""
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def parameter_groups(self) -> dict[str, set[str]]:
        """State-dict keys by role, each key in exactly one group; strategies choose from them
        what stays on a client:

        - ``encoder``: the backbone and every other task layer that is not below;
        - ``stack``: the OmniFM stack without its personal part;
        - ``head``: the task's output layer (``self.head``);
        - ``personal``: what the method keeps on each client (the PSP suffix token).

        A task whose output layer is more than ``self.head`` overrides this.
        """
        keys = set(self.state_dict())
        personal = set()
        if self.stack is not None:
            personal = {f"stack.{n}" for n in self.stack.personal_parameter_names()}
        head = {k for k in keys if k.startswith("head.")}
        stack = {k for k in keys if k.startswith("stack.")} - personal
        return {
            "encoder": keys - head - stack - personal,
            "stack": stack,
            "head": head,
            "personal": personal,
        }

    def metric_modes(self) -> dict[str, Mode]:
        """Whether higher (``max``) or lower (``min``) is better, per logged metric name
        (without the stage prefix): the losses, every torchmetrics metric by its
        ``higher_is_better``, and ``monitor`` by ``mode``. Written to a run folder's
        ``metrics.yaml``, where ``omnifm report`` reads it."""
        modes: dict[str, Mode] = {"loss": "min", "task_loss": "min", "spalign": "min"}
        for name, metric in self.val_metrics.items(keep_base=True):
            if metric.higher_is_better is not None:
                modes[name] = "max" if metric.higher_is_better else "min"
        modes[self.monitor] = self.mode
        return modes

    def forward(self, batch: Batch, bank: Retriever | None = None) -> tuple[Tensor, StackOutput]:
        """Predictions and the stack's output; ``bank``: where GSKR retrieves from."""
        encoded = self.encode(batch)
        tokens, features = encoded if isinstance(encoded, Encoded) else (encoded, None)
        if self.stack is not None:
            out = self.stack(self.spectral_input(batch), tokens, bank)
        else:
            empty = tokens.new_zeros(tokens.shape[0], 0).long()
            out = StackOutput(tokens, tokens.mean(dim=1), tokens.sum() * 0.0, None, empty)
        return self.decode(out, batch, features), out

    def current_bank(self) -> Retriever | None:
        """The bank a callback of the running Trainer provides (``RetrievalSource``); none
        outside a Trainer or without such a callback."""
        return retriever(self._trainer.callbacks) if self._trainer is not None else None

    def objective(
        self, batch: Batch, bank: Retriever | None = None, terms: Sequence[LossTerm] = ()
    ) -> tuple[Tensor, dict[str, Tensor], Tensor, StackOutput]:
        """The loss of ``batch`` (task loss, SPAlign, and each of ``terms``), its parts by
        name, the predictions and the stack's output. Nothing is logged: DP-SGD
        (``omnifm.federated.dpsgd``) differentiates it one example at a time."""
        preds, out = self(batch, bank)
        task = self.task_loss(preds, batch)
        loss = task + self.spalign_weight * out.align
        parts = {"task_loss": task, "spalign": out.align}
        for term in terms:
            parts[term.name] = value = term.loss_term(self, batch, out)
            loss = loss + value
        return loss, parts, preds, out

    def _step(self, batch: Batch, stage: str) -> tuple[Tensor, StackOutput]:
        terms = loss_terms(self.trainer.callbacks) if stage == "train" else []
        loss, parts, preds, out = self.objective(batch, self.current_bank(), terms)
        batch_size = preds.shape[0]
        log = {f"{stage}/{name}": value for name, value in parts.items()}
        log[f"{stage}/loss"] = loss
        self.log_dict(log, on_step=False, on_epoch=True, batch_size=batch_size)
        metrics = getattr(self, f"{stage}_metrics")
        self.update_metrics(metrics, preds.detach(), batch)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss, out

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        loss, out = self._step(batch, "train")
        # the retrieved entry ids reach callbacks in the step's output (on_train_batch_end);
        # kept on the device: a .cpu() here would stall a GPU every step
        return {"loss": loss, "hit_ids": out.hit_ids.detach()}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch, self.current_bank())[0]

    def _recalibrate_on_train_data(self) -> None:
        if self.recalibrate_bn and self.trainer.datamodule is not None:
            train = self.trainer.datamodule.train_dataloader()
            # in a fixed order: the estimate then does not depend on the shuffle state
            ordered = DataLoader(train.dataset, train.batch_size, num_workers=train.num_workers)
            self.recalibrate_batch_norm(islice(ordered, self.recalibrate_batches))

    @torch.no_grad()
    def recalibrate_batch_norm(self, loader: Iterable[Batch]) -> None:
        """Reset batch-norm running statistics and re-estimate them (cumulative mean) on
        ``loader``; what ``torch.optim.swa_utils.update_bn`` does, for dict batches."""
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        was_training = self.training
        self.eval()  # only the batch norms learn here (not dropout, nor the spectral statistics)
        for m in norms:
            m.train()
        bank = self.current_bank()
        for batch in loader:
            self(move_data_to_device(batch, self.device), bank)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.train(was_training)

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":  # standalone, not the val loop of a fit
            self._recalibrate_on_train_data()

    def on_test_start(self) -> None:
        self._recalibrate_on_train_data()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())

    @torch.no_grad()
    def spectral_tokens(self, batch: Batch) -> Tensor | None:
        """Spectral tokens ``s`` of a batch (``None`` without a tokenizer)."""
        if self.stack is None or self.stack.tokenizer is None:
            return None
        return self.stack.tokenizer(self.spectral_input(batch).to(self.device))
