"""The federation on Flower: a ``ClientApp`` and a ``ServerApp`` around our clients, server,
strategies and round loop, Flower's simulation, and submitting to a deployment.

Needs Flower (``pip install 'omnifm[flower]'``). ``omnifm fit --config RECIPE
--federation.backend flower`` runs the recipe here. A recipe sent with a run names only what
the receiving machine's :class:`Allowlist` admits.
"""

try:
    import flwr  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "omnifm.federated.flower needs Flower (flwr>=1.42), which is not installed: "
        "pip install 'omnifm[flower]'"
    ) from err

from omnifm.federated.flower.allowlist import Allowlist, RecipeRefused
from omnifm.federated.flower.clientapp import client_app, make_client_app
from omnifm.federated.flower.launch import run_flower, simulate, submit, write_app
from omnifm.federated.flower.local import LocalDeployment
from omnifm.federated.flower.serverapp import FlowerFederation, make_server_app, server_app
from omnifm.recipe import Recipe, load_recipe

__all__ = [
    "Allowlist",
    "FlowerFederation",
    "LocalDeployment",
    "Recipe",
    "RecipeRefused",
    "client_app",
    "load_recipe",
    "make_client_app",
    "make_server_app",
    "run_flower",
    "server_app",
    "simulate",
    "submit",
    "write_app",
]
