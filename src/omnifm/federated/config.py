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

__all__ = ["BankConfig", "FederationConfig", "FlowerConfig", "PrototypePrivacy"]

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
class BankConfig:
    """The server's spectral knowledge bank (used when the model has an OmniFM stack)."""

    capacity: PositiveInt = 512  # entries kept after pruning
    min_share: ClosedUnitInterval = 0.1  # of capacity, kept by every present modality
    merge_threshold: Cosine | None = 0.999  # cosine at which entries of a modality merge
    prototypes_per_client: NonNegativeInt = 8  # k-means centroids each client uploads
    warmup: bool = True  # every client uploads prototypes of the initial model before round 1
    privacy: PrototypePrivacy | None = None  # differentially private uploads (none: exact)


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
    backend: Literal["inprocess", "flower"] = "inprocess"  # flower: pip install omnifm[flower]
    flower: FlowerConfig = field(default_factory=FlowerConfig)
