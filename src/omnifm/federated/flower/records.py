"""Our messages as Flower records.

Tensors travel as ``ArrayRecord`` (exact dtype and shape, no copy through Python floats): the
shared weights, the bank snapshot's vectors and ids, and the spectral upload (prototypes,
retrieved ids and their counts). Numbers and strings travel as ``ConfigRecord`` (round, seed,
client name, modality tag, example count, the bank's modality names) and training or
evaluation metrics as ``MetricRecord``. A strategy's own tensors (SCAFFOLD's control variates)
travel as one more ``ArrayRecord`` each way.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import Tensor

from omnifm.federated.config import SecureAggregation
from omnifm.federated.flower.secure import clear_tensors, masked_reply, split_update
from omnifm.federated.messages import EvaluateRes, FitIns, FitRes

__all__ = [
    "bank_from_records",
    "evaluate_res_from_records",
    "evaluate_res_to_records",
    "fit_ins_from_records",
    "fit_ins_to_records",
    "fit_res_from_records",
    "fit_res_to_records",
    "secure_fit_res",
    "secure_fit_res_to_records",
    "shared_records",
    "tensors",
    "with_config",
]

WEIGHTS, BANK, CONFIG, UPLOAD, METRICS = "weights", "bank", "config", "upload", "metrics"
STRATEGY = "strategy"  # the strategy's own tensors: Strategy.broadcast() and LocalRound.upload


def tensors(record: ArrayRecord) -> dict[str, Tensor]:
    """An ArrayRecord's arrays as CPU tensors, in their order."""
    return dict(record.to_torch_state_dict())


def shared_records(
    weights: dict[str, Tensor],
    bank: dict[str, Any] | None,
    strategy: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """What every client of a round gets: the shared weights, the bank snapshot
    (``BankSnapshot.state_dict()``; none: no bank) and the strategy's broadcast (SCAFFOLD's
    control variate). Built once per round, sent to all."""
    records: dict[str, Any] = {WEIGHTS: ArrayRecord(weights)}
    if strategy:
        records[STRATEGY] = ArrayRecord(strategy)
    if bank is not None:
        records[BANK] = ArrayRecord({"vectors": bank["vectors"], "ids": bank["ids"]})
        records["bank_modalities"] = list(bank["modalities"])
    return records


def bank_from_records(content: RecordDict, config: ConfigRecord) -> dict[str, Any] | None:
    if BANK not in content.array_records:
        return None
    arrays = tensors(content.array_records[BANK])
    return {**arrays, "modalities": list(config.get("bank_modalities", []))}


def with_config(shared: dict[str, Any], config: dict[str, Any]) -> RecordDict:
    """A message's content: the round's shared records plus this client's settings."""
    arrays = {k: v for k, v in shared.items() if isinstance(v, ArrayRecord)}
    modalities = shared.get("bank_modalities", [])
    return RecordDict({**arrays, CONFIG: ConfigRecord({**config, "bank_modalities": modalities})})


def fit_ins_to_records(
    ins: FitIns,
    client: str,
    shared: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> RecordDict:
    """Server -> client: the round's shared weights, bank snapshot and settings (``extra``:
    more settings, e.g. a secure round's)."""
    shared = shared if shared is not None else shared_records(ins.weights, ins.bank, ins.strategy)
    config = {"client": client, "round": ins.round, "seed": ins.seed, "prototypes": ins.prototypes}
    return with_config(shared, {**config, **(extra or {})})


def fit_ins_from_records(content: RecordDict) -> tuple[FitIns, str]:
    """The FitIns and the client name the server addressed it to."""
    config = content.config_records[CONFIG]
    ins = FitIns(
        round=int(config["round"]),
        weights=tensors(content.array_records[WEIGHTS]),
        seed=int(config["seed"]),
        bank=bank_from_records(content, config),
        prototypes=int(config["prototypes"]),
        strategy=_optional(content, STRATEGY),
    )
    return ins, str(config["client"])


def _optional(content: RecordDict, name: str) -> dict[str, Tensor]:
    return tensors(content.array_records[name]) if name in content.array_records else {}


def _upload(res: FitRes) -> dict[str, Tensor]:
    pairs = (
        ("prototypes", res.prototypes),
        ("hit_ids", res.hit_ids),
        ("hit_counts", res.hit_counts),
    )
    return {k: v for k, v in pairs if v is not None}


def _res_config(res: FitRes, steps: int) -> dict[str, Any]:
    return {
        "client": res.client,
        "modality": res.modality,
        "num_examples": res.num_examples,
        "steps": steps,
    }


def fit_res_to_records(res: FitRes, steps: int) -> RecordDict:
    """Client -> server: shared weights, example count, metrics, spectral upload, bank hits."""
    upload = _upload(res)
    config = _res_config(res, steps)
    records = {
        WEIGHTS: ArrayRecord(res.weights),
        UPLOAD: ArrayRecord(upload),
        CONFIG: ConfigRecord(config),
        METRICS: MetricRecord(dict(res.metrics)),
    }
    if res.strategy:
        records[STRATEGY] = ArrayRecord(res.strategy)
    return RecordDict(records)


def fit_res_from_records(content: RecordDict) -> FitRes:
    config = content.config_records[CONFIG]
    upload = tensors(content.array_records[UPLOAD])
    return FitRes(
        client=str(config["client"]),
        modality=str(config["modality"]),
        num_examples=int(config["num_examples"]),
        weights=tensors(content.array_records[WEIGHTS]),
        metrics={k: float(v) for k, v in content.metric_records[METRICS].items()},
        prototypes=upload.get("prototypes"),
        hit_ids=upload.get("hit_ids"),
        hit_counts=upload.get("hit_counts"),
        strategy=_optional(content, STRATEGY),
    )


def secure_fit_res_to_records(
    res: FitRes, start: dict[str, Tensor], steps: int, max_weight: float, clipping_range: float
) -> RecordDict:
    """Client -> server in a secure round: the update from ``start`` for ``secaggplus_mod``
    to mask, the rest in the clear (``secure.masked_reply``)."""
    if res.strategy:
        raise ValueError("secure aggregation cannot carry a strategy's upload")
    update, ints = split_update(res.weights, start)
    clear = {f"weights/{k}": v for k, v in ints.items()}
    clear |= {f"upload/{k}": v for k, v in _upload(res).items()}
    options = SecureAggregation(max_weight=max_weight, clipping_range=clipping_range)
    config = _res_config(res, steps)
    return masked_reply(update, clear, res.num_examples, config, res.metrics, options)


def secure_fit_res(content: RecordDict, mean: dict[str, Tensor]) -> FitRes:
    """A site's result of a secure round: the round's ``mean`` floating-point state with
    its own integer tensors as its weights, and its clear records."""
    config = content.config_records[CONFIG]
    clear = clear_tensors(content)
    upload = {k.removeprefix("upload/"): v for k, v in clear.items() if k.startswith("upload/")}
    ints = {k.removeprefix("weights/"): v for k, v in clear.items() if k.startswith("weights/")}
    return FitRes(
        client=str(config["client"]),
        modality=str(config["modality"]),
        num_examples=int(config["num_examples"]),
        weights={**mean, **ints},
        metrics={k: float(v) for k, v in content.metric_records[METRICS].items()},
        prototypes=upload.get("prototypes"),
        hit_ids=upload.get("hit_ids"),
        hit_counts=upload.get("hit_counts"),
    )


def evaluate_res_to_records(res: EvaluateRes) -> RecordDict:
    config = ConfigRecord({"client": res.client, "num_examples": res.num_examples})
    return RecordDict({CONFIG: config, METRICS: MetricRecord(dict(res.metrics))})


def evaluate_res_from_records(content: RecordDict) -> EvaluateRes:
    config = content.config_records[CONFIG]
    metrics = {k: float(v) for k, v in content.metric_records[METRICS].items()}
    return EvaluateRes(str(config["client"]), int(config["num_examples"]), metrics)
