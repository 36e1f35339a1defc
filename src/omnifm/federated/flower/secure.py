"""Secure aggregation of the shared weights on Flower: Flower's SecAgg+ in our round loop.

Each site sends its update (its new shared floating-point weights minus the round's) masked
by Flower's ``secaggplus_mod``; the server runs the four stages of Flower's
``SecAggPlusWorkflow`` (setup, key sharing, masked vectors, unmasking) and learns only the
example-weighted mean of the round's updates, which becomes the round's mean state. What the
bank needs per site (spectral prototypes, retrieval counts) and the example counts, metrics
and integer buffers (batch norm's step counters) travel beside the masked vector in the clear;
``federation.bank.privacy`` is what protects the prototypes.

The workflow is Flower's, driven stage by stage: its setup stage gets the round's sampled
nodes through a small stand-in for the legacy strategy it expects (``_Round``), our
``FitIns`` records replace the legacy ones it would send, and its unmasking stage hands the
mean to ``_Round.aggregate_fit``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.history import History
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (
    SecAggPlusWorkflow,
    WorkflowState,
)
from flwr.serverapp import Grid
from torch import Tensor

from omnifm.federated.config import SecureAggregation

__all__ = [
    "CLEAR",
    "SecureRound",
    "clear_tensors",
    "masked_reply",
    "optional_secaggplus",
    "secure_round",
    "split_update",
]

CLEAR = "clear"  # what travels beside the masked vector: ConfigRecord of np.save bytes


def optional_secaggplus(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a secure round (those with its
    configuration record); every other message goes straight to the app."""
    secure = RECORD_KEY_CONFIGS in msg.content.config_records
    if msg.metadata.message_type == MessageType.TRAIN and secure:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def _bytes(t: Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, t.detach().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


def _tensor(b: bytes) -> Tensor:
    return torch.from_numpy(np.load(io.BytesIO(b), allow_pickle=False))


def split_update(
    weights: dict[str, Tensor], start: dict[str, Tensor]
) -> tuple[list[np.ndarray], dict[str, Tensor]]:
    """A site's update, floating-point keys in order and flattened (what is masked), and
    its integer tensors (sent in the clear). Flat: Flower 1.42's unmasking shifts and scales
    its arrays in place, which a 0-d array (a scalar buffer) escapes."""
    floats = [
        (weights[k] - start[k]).double().reshape(-1).numpy()
        for k in start
        if start[k].is_floating_point()
    ]
    ints = {k: weights[k] for k in start if not start[k].is_floating_point()}
    return floats, ints


def masked_reply(
    update: list[np.ndarray],
    clear: dict[str, Tensor],
    num_examples: int,
    config: dict[str, Any],
    metrics: dict[str, float],
    options: SecureAggregation,
) -> RecordDict:
    """The ClientApp's reply in a secure round: the update as the legacy ``FitRes`` that
    ``secaggplus_mod`` masks, and the rest as config and metric records (the mod empties every
    array record after masking). ``ValueError`` when the weighted update leaves the clipping
    range, which would change it silently."""
    ratio = num_examples / options.max_weight
    largest = max((float(np.abs(u).max()) for u in update if u.size), default=0.0)
    if largest * ratio > options.clipping_range:
        raise ValueError(
            f"secure aggregation: this site's update reaches {largest:.3g}, times its weight "
            f"{num_examples}/{options.max_weight:g}: beyond the clipping range "
            f"{options.clipping_range:g}, which would change it. Raise "
            "federation.flower.secure_aggregation.clipping_range or max_weight"
        )
    legacy = compat.fitres_to_recorddict(
        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), num_examples, {}),
        keep_input=True,
    )
    records = dict(legacy.items())
    records[CLEAR] = ConfigRecord({k: _bytes(v) for k, v in clear.items()})
    records["config"] = ConfigRecord(config)
    records["metrics"] = MetricRecord(dict(metrics))
    return RecordDict(records)


@dataclass
class _Proxy:
    node_id: int


@dataclass
class _Round:
    """What the workflow asks of a legacy strategy, for one round: the sampled nodes, then
    the unmasked mean."""

    nodes: list[int]
    mean: list[np.ndarray] | None = None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        empty = FitIns(Parameters(tensors=[], tensor_type="numpy.ndarray"), {})
        return [(_Proxy(n), empty) for n in self.nodes]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple:
        self.mean = parameters_to_ndarrays(results[0][1].parameters) if results else None
        return None, {}


class _Nodes:
    def __init__(self, n: int) -> None:
        self.n = n

    def num_available(self) -> int:
        return self.n


class _Recording:
    """A ``Grid`` that keeps the replies of the masked-vector stage (our records ride there)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.replies: list[Message] = []

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.replies = replies
        return replies


class _Workflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ stages; the setup sends our ``FitIns`` records in place of the legacy
    ones (keyed by node)."""

    def __init__(self, options: SecureAggregation, fit_ins: dict[int, RecordDict]) -> None:
        super().__init__(  # plain numbers: the mod checks their types
            num_shares=float(options.num_shares),
            reconstruction_threshold=float(options.reconstruction_threshold),
            max_weight=float(options.max_weight),
            clipping_range=float(options.clipping_range),
            quantization_range=int(options.quantization_range),
            modulus_range=int(options.modulus_range),
            timeout=None if options.timeout is None else float(options.timeout),
        )
        self.fit_ins = fit_ins

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {n: self.fit_ins[n] for n in state.nid_to_fitins}
        return ok


@dataclass
class SecureRound:
    """A secure round's outcome: the replies (by node) of the sites whose masked vectors were
    summed, the mean of their updates (none: the protocol halted) and why nodes failed."""

    replies: dict[int, Message] = field(default_factory=dict)
    mean: list[np.ndarray] | None = None
    failures: list[str] = field(default_factory=list)


def secure_round(
    grid: Grid, round_: int, fit_ins: dict[int, RecordDict], options: SecureAggregation
) -> SecureRound:
    """Run SecAgg+ over the nodes of ``fit_ins`` (the round's messages, by node)."""
    nodes = list(fit_ins)
    context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    strategy = _Round(nodes)
    state_records = RecordDict(
        {
            MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: round_}),
            MAIN_PARAMS_RECORD: ArrayRecord(),
        }
    )
    legacy = LegacyContext(context, strategy=strategy, client_manager=_Nodes(len(nodes)))
    legacy.state = state_records
    legacy.history = History()
    workflow, state = _Workflow(options, fit_ins), WorkflowState()
    recording = _Recording(grid)
    stages = (
        (workflow.setup_stage, grid),
        (workflow.share_keys_stage, grid),
        (workflow.collect_masked_vectors_stage, recording),
        (workflow.unmask_stage, grid),
    )
    out = SecureRound()
    for stage, through in stages:
        if not stage(through, legacy, state):  # type: ignore[arg-type]
            out.failures = [str(f) for f in state.failures] or ["SecAgg+ halted"]
            return out
    out.replies = {
        m.metadata.src_node_id: m
        for m in recording.replies
        if not m.has_error() and m.metadata.src_node_id in state.active_node_ids
    }
    out.mean = strategy.mean
    out.failures = [str(f) for f in state.failures]
    return out


def clear_tensors(content: RecordDict) -> dict[str, Tensor]:
    """The integer tensors a site sent in the clear beside its masked update."""
    record = content.config_records[CLEAR]
    return {k: _tensor(bytes(v)) for k, v in record.items()}
