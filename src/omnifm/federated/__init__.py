"""Federated learning: server, clients, strategies, sampling, checkpoints, the round loop."""

from omnifm.federated.client import Client, ClientFailure
from omnifm.federated.config import BankConfig, FederationConfig
from omnifm.federated.engine import Federation, FederationError
from omnifm.federated.messages import EvaluateRes, FitIns, FitRes
from omnifm.federated.rounds import RoundLoop
from omnifm.federated.sampling import ClientSampler
from omnifm.federated.server import Server
from omnifm.federated.strategies import FedAvg, FedBN, FedPer, FedProx, OmniFM, Strategy

__all__ = [
    "BankConfig",
    "Client",
    "ClientFailure",
    "ClientSampler",
    "EvaluateRes",
    "FedAvg",
    "FedBN",
    "FedPer",
    "FedProx",
    "Federation",
    "FederationConfig",
    "FederationError",
    "FitIns",
    "FitRes",
    "OmniFM",
    "RoundLoop",
    "Server",
    "Strategy",
]
