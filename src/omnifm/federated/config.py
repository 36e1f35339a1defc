"""The ``federation`` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse import lazy_instance
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from omnifm.federated.aggregators import Aggregator, Mean
from omnifm.federated.strategies import OmniFM, Strategy

__all__ = [
    "BankConfig",
    "FederationConfig",
    "FlowerConfig",
    "PrototypePrivacy",
    "SecureAggregation",
    "TrainingPrivacy",
]

Fraction = restricted_number_type("Fraction", float, [(">", 0.0), ("<=", 1.0)])
Cosine = restricted_number_type("Cosine", float, [(">=", -1.0), ("<=", 1.0)])


@dataclass
class PrototypePrivacy:
    """Differential privacy of the spectral prototypes each client uploads: its tokens scaled
    to norm ``clip`` and its cluster sums and counts noised (``private_centroids``), each
    upload accounted with Opacus' RDP accountant; a client stops uploading (and keeps
    training) once one more upload would spend more than ``epsilon``."""

    noise_multiplier: PositiveFloat = 4.0  # noise std over the clip (sums) or 1 (counts)
    clip: PositiveFloat = 1.0  # every image's token is scaled to this L2 norm
    epsilon: PositiveFloat = 8.0  # each client's budget over the run, at delta
    delta: OpenUnitInterval = 1e-5


@dataclass
class TrainingPrivacy:
    """Differentially private local training (DP-SGD, ``omnifm.federated.dpsgd``): batches
    drawn by Poisson sampling, every example's gradient clipped to ``max_grad_norm`` and the
    sum noised with ``noise_multiplier`` times it (Opacus' ``DPOptimizer``), every step
    accounted with Opacus' RDP accountant. The model is made private when it is built (batch
    norm becomes group norm); a client stops training once one more round would spend more
    than ``epsilon``."""

    noise_multiplier: PositiveFloat = 1.0  # noise std over max_grad_norm
    max_grad_norm: PositiveFloat = 1.0  # every example's gradient is clipped to this L2 norm
    epsilon: PositiveFloat = 8.0  # each client's budget over the run, at delta
    delta: OpenUnitInterval = 1e-5


@dataclass
class BankConfig:
    """The server's spectral knowledge bank (used when the model has an OmniFM stack)."""

    capacity: PositiveInt = 512  # entries kept after pruning
    min_share: ClosedUnitInterval = 0.1  # of capacity, kept by every present modality
    merge_threshold: Cosine | None = 0.999  # cosine at which entries of a modality merge
    prototypes_per_client: NonNegativeInt = 8  # k-means centroids each client uploads
    warmup: bool = True  # every client uploads prototypes of the initial model before round 1
    privacy: PrototypePrivacy | None = None  # differentially private uploads (none: exact)


@dataclass
class SecureAggregation:
    """Flower's SecAgg+ for the shared weights (``backend: flower``): each site masks its
    update (new shared weights minus the round's) so that the server learns only the
    example-weighted mean of the round's updates. Updates are clipped to ``clipping_range``
    and quantized to ``quantization_range`` levels (a site whose update leaves the range
    fails its round, saying so); weights are example counts over ``max_weight``, whose sum
    over a round must stay below ``modulus_range / quantization_range`` (1024 by default)."""

    num_shares: Fraction = 1.0  # of the round's clients each site shares its secrets with
    reconstruction_threshold: Fraction = 0.66  # of those shares needed to unmask a dropout
    clipping_range: PositiveFloat = 8.0  # updates are clipped to [-range, range]
    quantization_range: PositiveInt = 4194304  # levels of the quantized update (2**22)
    modulus_range: PositiveInt = 4294967296  # the field the masked sums live in (2**32)
    max_weight: PositiveFloat = 1000.0  # example counts are divided by this
    timeout: PositiveFloat | None = None  # seconds each stage waits for replies


@dataclass
class FlowerConfig:
    """How the federation runs on Flower (``backend: flower``)."""

    # a SuperLink connection of the Flower configuration (FLWR_HOME/config.toml): the run goes
    # to that deployment; none: Flower's simulation on this machine
    superlink: str | None = None
    # seconds a round (or an evaluation) waits for replies; none: until every node replied or
    # Flower declared it gone (after two missed heartbeats, about a minute)
    round_timeout: PositiveFloat | None = None
    connect_timeout: PositiveFloat = 300.0  # seconds the server waits for the sites' nodes
    client_cpus: PositiveFloat = 1.0  # simulation: CPU cores per simulated client
    client_gpus: NonNegativeFloat | None = None  # simulation: GPUs per client; none: auto
    # SecAgg+: the server sees only the round's mean update (none: each site's in the clear)
    secure_aggregation: SecureAggregation | None = None


@dataclass
class FederationConfig:
    """Rounds, participation, strategy, fault tolerance, bank, seed and output folder."""

    rounds: PositiveInt = 5
    participation: Fraction = 1.0  # fraction of clients sampled each round (seeded)
    # lazy_instance lets the CLI print and override the default
    strategy: Strategy = lazy_instance(OmniFM)  # noqa: RUF009
    # how the clients' shared states become one: Mean, or robust Median, TrimmedMean, Krum
    aggregator: Aggregator = lazy_instance(Mean)  # noqa: RUF009
    min_clients: PositiveInt = 1  # a round needs this many successful clients
    seed: int = 0  # client sampling and each client's local fit
    output: str = "runs"  # run folders are output/name/version_N
    name: str = "omnifm"
    eval_every: PositiveInt = 1  # validate every client every this many rounds (and the last)
    # MiB of client states (personal weights, a strategy's client state such as Ditto's model)
    # kept in memory; the least recently used beyond it go to RUN/client_states/ (none: no limit)
    client_memory: NonNegativeFloat | None = 1024.0
    # MiB a robust aggregator (Median, TrimmedMean, Krum) may hold: it keeps every sampled
    # client's shared state until the round ends (the Mean streams: one state for any number)
    aggregation_memory: NonNegativeFloat | None = 8192.0
    bank: BankConfig = field(default_factory=BankConfig)
    dp_sgd: TrainingPrivacy | None = None  # differentially private local training (none: off)
    backend: Literal["inprocess", "flower"] = "inprocess"  # flower: pip install omnifm[flower]
    flower: FlowerConfig = field(default_factory=FlowerConfig)
