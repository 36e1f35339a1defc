"""Federated strategies: which state stays personal, how shared state is aggregated, and what
a client adds to its local training.

A strategy is one class with a server side (``personal_keys``, ``aggregate``, server state in
``state_dict``, what it ``broadcast``s to clients) and a client side (``client_callbacks`` for
the local Trainer, or ``local_fit`` for a schedule of several fits; state the client keeps in
``LocalRound.state``; the weights a client is evaluated with). A new strategy overrides what
it changes; it needs no change to the client, the server or the round loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, Trainer
from torch import Tensor, nn

from omnifm.blocks import GlobalGuidance
from omnifm.federated.aggregators import Aggregator, Mean, RunningSum
from omnifm.federated.callbacks import (
    CategoryGuidance,
    ControlVariates,
    DynamicRegularizer,
    LocalRound,
    ModelContrastive,
    ProximalTerm,
    cpu_copy,
)
from omnifm.functional import (
    adaptive_step,
    feddyn_server_update,
    momentum_step,
    weighted_average,
)
from omnifm.tasks.base import OmniFMTask

__all__ = [
    "MOON",
    "SCAFFOLD",
    "BatchRound",
    "Ditto",
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
    "LocalFit",
    "LocalRound",
    "OmniFM",
    "Round",
    "Strategy",
]

# one fresh local Trainer fit of the client's model on its data: the callbacks, and how many
# times the recipe's local budget (its trainer's max_epochs and max_steps) to train for
LocalFit = Callable[[list[Callback], int], Trainer]


class Round:
    """One round of a strategy's aggregation, streamed: each client's shared state, example
    count and upload (``LocalRound.upload``) are folded in as they arrive, so the server holds
    one running sum whatever the number of clients (a robust aggregator holds the states; see
    ``omnifm.federated.aggregators``). Strategies read the round's statistics in ``finish``."""

    def __init__(self, current: dict[str, Tensor], aggregator: Aggregator, sum_states: bool):
        self.current = current  # the shared state the round started from
        self.clients = 0
        self._states = aggregator.start()
        self._uploads = RunningSum()  # of the clients that sent an upload
        self._sum = RunningSum() if sum_states else None

    def add(self, state: Mapping[str, Tensor], num_examples: int, upload: Mapping[str, Tensor]):
        self._states.add(state, float(num_examples))
        if upload:  # a client without local steps sends none
            self._uploads.add(upload)
        if self._sum is not None:
            self._sum.add(state)
        self.clients += 1

    def mean(self) -> dict[str, Tensor]:
        """The aggregator's result over the clients' states (the weighted mean by default)."""
        return self._states.result()

    def upload_mean(self) -> tuple[dict[str, Tensor], int]:
        """The mean of the uploads and how many clients sent one."""
        n = self._uploads.count
        return ({k: v / n for k, v in self._uploads.sum.items()} if n else {}), n

    def state_sum(self) -> dict[str, Tensor]:
        """The unweighted sum of the clients' states (strategies with ``sums_states``)."""
        assert self._sum is not None, "the strategy did not ask for sums_states"
        return self._sum.sum


class BatchRound(Round):
    """A round whose results are all held, its statistics computed from the whole list with
    the batch functions of ``omnifm.functional`` (``Strategy.aggregate``)."""

    def __init__(self, current: dict[str, Tensor], aggregator: Aggregator, sum_states: bool):
        super().__init__(current, aggregator, sum_states)
        self.aggregator = aggregator
        self.states: list[Mapping[str, Tensor]] = []
        self.num_examples: list[int] = []
        self.uploads: list[Mapping[str, Tensor]] = []

    def add(self, state: Mapping[str, Tensor], num_examples: int, upload: Mapping[str, Tensor]):
        self.states.append(state)
        self.num_examples.append(num_examples)
        if upload:
            self.uploads.append(upload)
        self.clients += 1

    def mean(self) -> dict[str, Tensor]:
        if type(self.aggregator) is Mean:
            return weighted_average(self.states, [float(n) for n in self.num_examples])
        return self.aggregator(self.states, self.num_examples)

    def upload_mean(self) -> tuple[dict[str, Tensor], int]:
        sent = self.uploads
        if not sent:
            return {}, 0
        return {k: torch.stack([u[k] for u in sent]).mean(0) for k in sent[0]}, len(sent)

    def state_sum(self) -> dict[str, Tensor]:
        return {k: torch.stack([s[k] for s in self.states]).sum(0) for k in self.states[0]}


class Strategy:
    """FedAvg's rules; subclasses change what stays personal, aggregation, server or client
    state, and local training."""

    sums_states = False  # whether ``finish`` reads ``Round.state_sum`` (FedDyn's)
    # whether ``finish`` needs more than the round's mean state (uploads, sums): secure
    # aggregation, which gives the server the mean only, cannot serve it
    needs_each_client = False

    # server side -------------------------------------------------------------------------------
    def personal_keys(self, model: OmniFMTask) -> set[str]:
        """State-dict keys that never leave a client (default: none); chosen from the task's
        ``parameter_groups()`` (encoder, stack, head, personal)."""
        return set()

    def bind(self, model: OmniFMTask, num_clients: int = 1, shared: set[str] | None = None) -> None:
        """Called once by the server before round 1 with the run's model, the number of
        clients that share state through this instance and the state-dict keys it aggregates
        (``None``: every key it does not keep personal). With many tasks the server binds one
        copy per scope: the state every task shares, and each task's own (default: nothing)."""

    def broadcast(self) -> dict[str, Tensor]:
        """Server state every client receives with the round's weights (``LocalRound.server``;
        SCAFFOLD's control variate); default: none."""
        return {}

    def start(self, current: dict[str, Tensor], aggregator: Aggregator | None = None) -> Round:
        """An empty round of this strategy's aggregation, which the server folds each client's
        result into as it arrives (``Round.add``) and then ``finish``es."""
        return Round(current, aggregator or Mean(), sum_states=self.sums_states)

    def finish(self, round_: Round) -> dict[str, Tensor]:
        """New shared state from a round's folded results: ``aggregator`` (the recipe's
        ``federation.aggregator``; default the example-weighted mean) of the clients' shared
        states. Strategies with server state step it here from the round's statistics."""
        return round_.mean()

    def aggregate(
        self,
        states: list[dict[str, Tensor]],
        num_examples: list[int],
        current: dict[str, Tensor],
        aggregator: Aggregator | None = None,
        uploads: Sequence[Mapping[str, Tensor]] = (),
    ) -> dict[str, Tensor]:
        """``finish`` of a round whose results are all at hand (``uploads``: what each
        client's strategy side sent, ``LocalRound.upload``), its statistics computed from
        the whole list: the reference the server's streamed rounds are tested against."""
        round_ = BatchRound(current, aggregator or Mean(), self.sums_states)
        for i, (state, n) in enumerate(zip(states, num_examples, strict=True)):
            round_.add(state, n, uploads[i] if uploads else {})
        return self.finish(round_)

    def state_dict(self) -> dict[str, Any]:
        """What the server keeps across rounds (default: nothing); saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    # client side -------------------------------------------------------------------------------
    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        """Lightning callbacks a client adds to its local Trainer this round: a loss term
        (``omnifm.tasks.hooks.LossTerm``), a gradient correction (``on_before_optimizer_step``),
        ... (default: none). ``local.shared`` is the round's shared state."""
        return []

    def local_fit(self, local: LocalRound, fit: LocalFit) -> None:
        """A client's local training this round: one ``fit`` with ``client_callbacks``.
        Override for several fits (FedRep's head then body, Ditto's two models)."""
        fit(self.client_callbacks(local), 1)

    def evaluation_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """The full model state a client with strategy ``state`` is evaluated with; ``None``
        (the default): the global shared weights with its personal ones."""
        return None

    def __repr__(self) -> str:  # the hyperparameters; state (``_``-named) is left out
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__.removeprefix('LazyInstance_')}({args})"


class FedAvg(Strategy):
    """McMahan et al. 2017: everything shared, example-weighted averaging."""


class FedProx(Strategy):
    """Li et al. 2020: FedAvg plus ``mu / 2 * ||w - w_global||^2`` in each client's loss."""

    def __init__(self, mu: float = 0.01) -> None:
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = mu

    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        return [ProximalTerm(self.mu, local.shared)]


class FedPer(Strategy):
    """Arivazhagan et al. 2019: the head stays on each client; the body is averaged."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        return model.parameter_groups()["head"]


class FedBN(Strategy):
    """Li et al. 2021: batch-norm parameters and running statistics stay on each client."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        keys = set()
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                keys |= {f"{name}.{k}" for k in module.state_dict()}
        return keys


class OmniFM(Strategy):
    """OmniFM: the OmniFM stack on, the PSP suffix token and the head personal."""

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        if model.stack is None:
            raise ValueError(
                "strategy OmniFM needs the OmniFM stack, but the model has stack: null; "
                "set model.init_args.stack (class_path: omnifm.blocks.OmniFMStack) or use "
                "a baseline strategy such as FedAvg or FedPer"
            )
        groups = model.parameter_groups()
        return groups["personal"] | groups["head"]


class _ServerOptimizer(Strategy):
    """FedAvg whose server treats ``aggregate(states) - current`` as a pseudo-gradient and
    steps its trainable parameters with an optimizer that keeps state across rounds (buffers
    such as batch-norm statistics take the aggregate)."""

    def __init__(self) -> None:
        self._parameters: set[str] = set()
        self._state: dict[str, Any] = {"rounds": 0}

    def bind(self, model: OmniFMTask, num_clients: int = 1, shared: set[str] | None = None) -> None:
        self._parameters = {name for name, _ in model.named_parameters()}

    def finish(self, round_: Round) -> dict[str, Tensor]:
        averaged, current = round_.mean(), round_.current
        keys = [k for k in averaged if k in self._parameters and averaged[k].is_floating_point()]
        self._state["rounds"] += 1
        stepped = self.step({k: current[k] for k in keys}, {k: averaged[k] for k in keys})
        return {**averaged, **stepped}

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = {"rounds": 0, **state}


class FedAvgM(_ServerOptimizer):
    """Hsu et al. 2019: server momentum on the pseudo-gradient, ``v = momentum v + g``,
    ``x = x - lr v`` (their experiments' momentum 0.9 with server lr 1.0)."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"FedAvgM needs lr > 0 and 0 <= momentum < 1, got {lr}, {momentum}")
        self.lr, self.momentum = lr, momentum

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        new, self._state["velocity"] = momentum_step(
            current, averaged, self._state.get("velocity"), self.lr, self.momentum
        )
        return new


class _Adaptive(_ServerOptimizer):
    rule: Literal["adam", "yogi", "adagrad"]

    def __init__(self, eta: float, beta_1: float, beta_2: float, tau: float) -> None:
        super().__init__()
        if eta <= 0 or tau <= 0 or not (0 <= beta_1 < 1 and 0 <= beta_2 < 1):
            raise ValueError(
                f"{type(self).__name__} needs eta > 0, tau > 0 and betas in [0, 1), got "
                f"eta={eta}, beta_1={beta_1}, beta_2={beta_2}, tau={tau}"
            )
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau

    def step(self, current: dict[str, Tensor], averaged: dict[str, Tensor]) -> dict[str, Tensor]:
        moments = (self._state["m"], self._state["v"]) if "m" in self._state else None
        new, (self._state["m"], self._state["v"]) = adaptive_step(
            current,
            averaged,
            moments,
            self._state["rounds"],
            self.rule,
            self.eta,
            self.beta_1,
            self.beta_2,
            self.tau,
        )
        return new


class FedAdam(_Adaptive):
    """Reddi et al. 2021, Adam on the server (defaults of Flower's ``FedAdam``), its rate
    bias-corrected as Kingma & Ba's, ``t`` = the server's step count."""

    rule = "adam"

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(eta, beta_1, beta_2, tau)


class FedYogi(_Adaptive):
    """Reddi et al. 2021, Yogi on the server (defaults of Flower's ``FedYogi``)."""

    rule = "yogi"

    def __init__(
        self, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(eta, beta_1, beta_2, tau)


class FedAdagrad(_Adaptive):
    """Reddi et al. 2021, Adagrad on the server, no momentum (defaults of Flower's
    ``FedAdagrad``)."""

    rule = "adagrad"

    def __init__(self, eta: float = 0.1, tau: float = 1e-3) -> None:
        super().__init__(eta, 0.0, 0.0, tau)


# personalised and drift-correcting strategies ---------------------------------------------------
def _zeros_of_shared(
    strategy: Strategy, model: OmniFMTask, shared: set[str] | None = None
) -> dict[str, Tensor]:
    """Zeros (on the CPU) for each trainable parameter of ``model`` that ``strategy`` shares
    (of ``shared``, where given): the initial server state of SCAFFOLD (``c``) and FedDyn
    (``h``)."""
    personal = strategy.personal_keys(model)
    return {
        name: torch.zeros_like(p, device="cpu")
        for name, p in model.named_parameters()
        if p.requires_grad and name not in personal and (shared is None or name in shared)
    }


class _ServerTensors(Strategy):
    """A strategy whose server keeps one tensor per shared trainable parameter (SCAFFOLD's
    ``c``, FedDyn's ``h``), zero at first and saved in every checkpoint under ``key``;
    ``update`` turns the round's aggregate into the new shared state and moves them."""

    key: str
    needs_each_client = True  # SCAFFOLD's uploads, FedDyn's sum of states

    def __init__(self) -> None:
        self._server: dict[str, Tensor] = {}
        self._num_clients = 1

    def bind(self, model: OmniFMTask, num_clients: int = 1, shared: set[str] | None = None) -> None:
        self._num_clients = num_clients
        self._server = _zeros_of_shared(self, model, shared)

    def state_dict(self) -> dict[str, Any]:
        return {self.key: dict(self._server)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.key in state:
            self._server = dict(state[self.key])


class SCAFFOLD(_ServerTensors):
    """Karimireddy et al. 2020: stochastic controlled averaging. Clients correct every step's
    gradient by ``c - c_i`` (server and client control variates) and update ``c_i`` by option
    II; the server averages the weights (global step size ``server_lr``: 1.0 is the mean) and
    moves ``c`` by ``|S| / N`` times the mean of the clients' variate changes. ``c_i`` stays on
    its client; ``c`` is in every checkpoint."""

    key = "c"

    def __init__(self, server_lr: float = 1.0) -> None:
        super().__init__()
        if server_lr <= 0:
            raise ValueError(f"SCAFFOLD server_lr must be > 0, got {server_lr}")
        self.server_lr = server_lr

    def broadcast(self) -> dict[str, Tensor]:
        return self._server

    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        return [ControlVariates(local)]

    def finish(self, round_: Round) -> dict[str, Tensor]:
        averaged, current, c = round_.mean(), round_.current, self._server
        if self.server_lr != 1.0:
            for k in c:
                averaged[k] = current[k] + self.server_lr * (averaged[k] - current[k])
        change, sent = round_.upload_mean()  # the clients' mean variate change
        if sent:
            share = sent / self._num_clients
            for k in c:
                c[k] = c[k] + share * change[k].to(c[k].dtype)
        return averaged


class FedDyn(_ServerTensors):
    """Acar et al. 2021: federated learning with dynamic regularisation. Each client adds
    ``alpha / 2 ||theta - theta_server||^2 - <g_k, theta>`` to its loss and keeps its gradient
    state ``g_k``; the server keeps ``h`` and sends ``aggregate(theta_k) - h / alpha``
    (``alpha`` 0.01, within the paper's grid {0.1, 0.01, 0.001})."""

    key = "h"
    sums_states = True

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"FedDyn alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        return [DynamicRegularizer(self.alpha, local, _trainable_shared(local))]

    def finish(self, round_: Round) -> dict[str, Tensor]:
        averaged = round_.mean()
        h = feddyn_server_update(
            self._server,
            round_.current,
            round_.state_sum(),
            round_.clients,
            self.alpha,
            self._num_clients,
        )
        self._server = h
        return {**averaged, **{k: averaged[k] - v / self.alpha for k, v in h.items()}}


def _trainable_shared(local: LocalRound) -> set[str]:
    """The client model's trainable parameters that are shared this round."""
    return {k for k, p in local.model.named_parameters() if k in local.shared and p.requires_grad}


@contextlib.contextmanager
def _training_only(model: nn.Module, names: set[str]) -> Iterator[None]:
    """Train only the parameters ``names``; the others are frozen (their stale gradients
    dropped) until the block ends."""
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(before[n] and n in names)
        p.grad = None
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])
            p.grad = None


class FedRep(Strategy):
    """Collins et al. 2021: a shared representation and personal heads. Each round a client
    trains its head with the body frozen for ``head_epochs`` local budgets (the recipe's
    trainer epochs or steps), then the body with the head frozen for one; the head stays
    personal. Default 10 head epochs and 1 body epoch as in the paper's code."""

    def __init__(self, head_epochs: int = 10) -> None:
        if head_epochs < 1:
            raise ValueError(f"FedRep head_epochs must be >= 1, got {head_epochs}")
        self.head_epochs = head_epochs

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        return model.parameter_groups()["head"]

    def local_fit(self, local: LocalRound, fit: LocalFit) -> None:
        head = local.model.parameter_groups()["head"]
        body = {n for n, _ in local.model.named_parameters()} - head
        with _training_only(local.model, head):
            fit([], self.head_epochs)
        with _training_only(local.model, body):
            fit([], 1)


class Ditto(Strategy):
    """Li et al. 2021: fair and robust personalisation. A client trains the global model as
    FedAvg does, and its own personal model (all of it, kept on the client) with
    ``lam / 2 ||v - w_global||^2`` for ``personal_epochs`` local budgets; it is evaluated with
    its personal model. ``lam`` 0.1 from the paper's grid {0.01, 0.1, 1, 2}."""

    def __init__(self, lam: float = 0.1, personal_epochs: int = 1) -> None:
        if lam < 0 or personal_epochs < 1:
            raise ValueError(
                f"Ditto needs lam >= 0 and personal_epochs >= 1, got {lam}, {personal_epochs}"
            )
        self.lam = lam
        self.personal_epochs = personal_epochs

    def local_fit(self, local: LocalRound, fit: LocalFit) -> None:
        model = local.model
        start = cpu_copy(model.state_dict())
        fit([], 1)  # the global model's local update
        trained = cpu_copy(model.state_dict())
        model.load_state_dict(local.state or start)
        fit([ProximalTerm(self.lam, local.shared)], self.personal_epochs)
        local.state.clear()
        local.state.update(cpu_copy(model.state_dict()))
        model.load_state_dict(trained)  # what the client sends

    def evaluation_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        return dict(state) or None


class MOON(Strategy):
    """Li, He & Song 2021: model-contrastive federated learning. Each client adds ``mu`` times
    a contrastive loss that pulls its representation towards the round's global model's and
    away from its previous local model's (temperature ``tau``); the previous model (all of it)
    stays on the client. Defaults ``mu`` 1 and ``tau`` 0.5 from the paper."""

    def __init__(self, mu: float = 1.0, tau: float = 0.5) -> None:
        if mu < 0 or tau <= 0:
            raise ValueError(f"MOON needs mu >= 0 and tau > 0, got {mu}, {tau}")
        self.mu, self.tau = mu, tau

    def local_fit(self, local: LocalRound, fit: LocalFit) -> None:
        model = local.model
        global_state = cpu_copy(model.state_dict())
        previous = local.state or global_state  # round 1: the global model
        fit([ModelContrastive(self.mu, self.tau, global_state, previous)], 1)
        local.state.clear()
        local.state.update(cpu_copy(model.state_dict()))


def add_guidance(model: OmniFMTask) -> GlobalGuidance:
    """GPFL's ``GlobalGuidance`` at ``model.gpfl`` (added the first time), its valve with the
    personal condition in front of ``model.head`` (a forward pre-hook)."""
    if hasattr(model, "gpfl"):
        return model.gpfl
    head = getattr(model, "head", None)
    if getattr(model, "task_type", None) != "multi-class" or not isinstance(head, nn.Linear):
        raise ValueError(
            "strategy GPFL needs a multi-class classifier with a linear head "
            "(omnifm.tasks.ClassificationTask, task_type multi-class); it learns one embedding "
            "per class. Use FedRep or Ditto for other tasks"
        )
    guidance = GlobalGuidance(head.in_features, head.out_features)
    model.add_module("gpfl", guidance)
    head.register_forward_pre_hook(lambda _, args: (guidance.personalise(args[0]),))
    return guidance


class GPFL(Strategy):
    """Zhang et al. 2023: global and personalised feature information. A conditional valve
    (CoV) turns the features into personalised ones (the head's input) and global ones, guided
    towards global category embeddings (GCE) in angle and magnitude (``lam``); CoV and GCE are
    shared and regularised by ``mu``. The head and the client's conditional input stay
    personal. Multi-class classification only; defaults ``lam`` 0.01 and ``mu`` 0.1 from the
    paper. The strategy adds its modules to the model (``model.gpfl``)."""

    def __init__(self, lam: float = 0.01, mu: float = 0.1) -> None:
        if lam < 0 or mu < 0:
            raise ValueError(f"GPFL needs lam >= 0 and mu >= 0, got {lam}, {mu}")
        self.lam, self.mu = lam, mu

    def personal_keys(self, model: OmniFMTask) -> set[str]:
        add_guidance(model)  # both sides ask this first: the server and every Flower site
        return model.parameter_groups()["head"] | {"gpfl.personal_input"}

    def client_callbacks(self, local: LocalRound) -> list[Callback]:
        return [CategoryGuidance(local, self.lam, self.mu)]
