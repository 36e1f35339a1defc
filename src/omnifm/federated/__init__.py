"""Federated learning: server, clients, strategies, sampling, checkpoints, the round loop."""

from omnifm.federated.aggregators import Aggregator, Krum, Mean, Median, TrimmedMean
from omnifm.federated.client import Client, ClientFailure
from omnifm.federated.config import BankConfig, FederationConfig
from omnifm.federated.engine import Federation, FederationError
from omnifm.federated.messages import EvaluateRes, FitIns, FitRes
from omnifm.federated.rounds import RoundLoop
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.server import Server
from omnifm.federated.store import ClientStore
from omnifm.federated.strategies import (
    GPFL,
    MOON,
    SCAFFOLD,
    Ditto,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBN,
    FedDyn,
    FedPer,
    FedProx,
    FedRep,
    FedYogi,
    LocalRound,
    OmniFM,
    Strategy,
)

__all__ = [
    "GPFL",
    "MOON",
    "SCAFFOLD",
    "Aggregator",
    "BankConfig",
    "Client",
    "ClientFailure",
    "ClientSampler",
    "ClientStore",
    "Ditto",
    "EvaluateRes",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBN",
    "FedDyn",
    "FedPer",
    "FedProx",
    "FedRep",
    "FedYogi",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FitIns",
    "FitRes",
    "Krum",
    "LocalRound",
    "Mean",
    "Median",
    "OmniFM",
    "RoundLoop",
    "Server",
    "Strategy",
    "TrimmedMean",
]
