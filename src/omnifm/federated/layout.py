"""Who shares which state: every task, the clients of one task, or one client alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from omnifm.federated.callbacks import cpu_copy
from omnifm.federated.strategies import Strategy
from omnifm.tasks.base import OmniFMTask
from omnifm.tasks.multitask import MultiTask, keys_under

__all__ = ["ACROSS", "Layout", "Scope", "client_tasks"]

ACROSS = "*"  # the scope of the state every task (and so every client) shares


@dataclass(frozen=True)
class Scope:
    """State that one group of clients aggregates together, with its own strategy instance.

    ``keys`` are named as the model of ``task`` names them; in the server's shared state they
    carry ``prefix`` (``""`` for the state every task shares, ``"task/"`` for one task's).
    """

    name: str  # ACROSS, or a task name
    task: str  # the task whose model names ``keys`` (the first task for ACROSS)
    keys: tuple[str, ...]
    clients: tuple[str, ...]
    prefix: str = ""


class Layout:
    """Which state-dict keys are shared across every task, within one task, or personal.

    A federation of one task (``model`` an ``OmniFMTask``) has one scope, the state its
    strategy does not keep personal, under the model's own key names. With a
    ``MultiTask``, the keys under its ``shared`` prefixes form the scope every client
    aggregates; the rest of a task's shared state is a scope of that task's clients, named
    ``task/key`` in the server's state; each task's personal keys come from the strategy.

    Args:
        model: the federation's task, or its ``MultiTask``.
        strategy: says what stays personal (``Strategy.personal_keys``) in each task's model.
        clients: client name -> task name (one task: just the client names).
    """

    def __init__(
        self,
        model: OmniFMTask | MultiTask,
        strategy: Strategy,
        clients: Mapping[str, str] | Sequence[str],
    ) -> None:
        self.multi = isinstance(model, MultiTask)
        if isinstance(model, MultiTask):
            self.tasks = {n: model.task(n) for n in model.task_names()}
        else:
            self.tasks = {"": model}
        if isinstance(clients, Mapping):
            self.task_of = dict(clients)
        else:
            self.task_of = dict.fromkeys(clients, next(iter(self.tasks)))
        unknown = sorted(set(self.task_of.values()) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"clients name tasks {unknown} that the model lacks (tasks: "
                f"{sorted(self.tasks)}); give model and data the same task names"
            )
        # first: a strategy may add modules to the model it is asked about (GPFL)
        self.personal = {t: strategy.personal_keys(m) for t, m in self.tasks.items()}
        states = {t: m.state_dict() for t, m in self.tasks.items()}
        first = next(iter(self.tasks))
        if isinstance(model, MultiTask):
            across = self._across(model, states)
        else:
            across = [k for k in states[first] if k not in self.personal[first]]
        self.across = tuple(across)
        common = set(across)
        self.within = {
            t: tuple(k for k in s if k not in self.personal[t] and k not in common)
            for t, s in states.items()
        }
        self.scopes = [Scope(ACROSS, first, self.across, tuple(self.task_of))]
        for t, keys in self.within.items():
            members = tuple(c for c, task in self.task_of.items() if task == t)
            if keys:
                self.scopes.append(Scope(t, t, keys, members, f"{t}/"))
        self._sizes = {t: {k: v.numel() for k, v in s.items()} for t, s in states.items()}
        self._initial_personal = {
            t: cpu_copy({k: states[t][k] for k in self.personal[t]}) for t in self.tasks
        }
        self._names = {  # per task: its local key -> the key in the server's shared state
            t: {**{k: k for k in self.across}, **{k: f"{t}/{k}" for k in self.within[t]}}
            for t in self.tasks
        }

    def _across(self, model: MultiTask, states: dict[str, dict[str, Tensor]]) -> list[str]:
        """Keys under the shared prefixes that no task keeps personal, checked to agree."""
        per_task = {}
        for t, state in states.items():
            under = set().union(*(keys_under(state, p) for p in model.shared))
            per_task[t] = [k for k in state if k in under and k not in self.personal[t]]
        first, keys = next(iter(per_task.items()))
        for t, mine in per_task.items():
            if set(mine) != set(keys):
                key = sorted(set(mine) ^ set(keys))[0]
                raise ValueError(
                    f"the strategy keeps {key} personal in one of tasks {first!r} and {t!r} but "
                    "shares it in the other, inside the shared part "
                    f"{[p for p in model.shared if keys_under([key], p)]}; leave it out of "
                    "model.init_args.shared or use a strategy that treats the tasks alike"
                )
        return keys

    # names ---------------------------------------------------------------------------------
    def task(self, client: str) -> str:
        return self.task_of[client]

    def model(self, client: str) -> OmniFMTask:
        """The model client ``client`` trains (its task's)."""
        return self.tasks[self.task_of[client]]

    def local(self, task: str, shared: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """What of the server's ``shared`` state task ``task`` holds, under its own key names
        (also for a strategy's broadcast, which holds some of the keys)."""
        names = self._names[task]
        return {k: shared[g] for k, g in names.items() if g in shared}

    def to_global(self, task: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A client's shared state (its task's key names) under the server's names."""
        names = self._names[task]
        return {names[k]: v for k, v in state.items() if k in names}

    def initial_shared(self) -> dict[str, Tensor]:
        """The server's shared state at round 0: every task's, under the server's names."""
        shared: dict[str, Tensor] = {}
        for t, model in reversed(self.tasks.items()):  # the first task's across state wins
            state = model.state_dict()
            shared.update(self.to_global(t, {k: state[k] for k in self._names[t]}))
        return {k: shared[k] for k in self._order()}

    def _order(self) -> list[str]:
        return [*self.across, *(f"{t}/{k}" for t, keys in self.within.items() for k in keys)]

    def initial_personal(self, task: str) -> dict[str, Tensor]:
        """Task ``task``'s personal state as the model was built (a client's first round)."""
        return dict(self._initial_personal[task])

    def describe(self) -> str:
        """What is shared with whom, by module, for the start of a run's log."""
        lines = []
        for scope in self.scopes:
            who = (
                f"every client ({len(scope.clients)})"
                if scope.name == ACROSS
                else f"the {len(scope.clients)} clients of task {scope.name!r}"
            )
            sizes = self._sizes[scope.task]
            lines.append(f"  shared by {who}: {_modules(scope.keys, sizes)}")
        for t, keys in self.personal.items():
            label = f"task {t!r}" if self.multi else "the task"
            lines.append(f"  personal in {label}: {_modules(sorted(keys), self._sizes[t])}")
        return "\n".join(lines)


def _modules(keys: Sequence[str], sizes: Mapping[str, int]) -> str:
    """Keys summarised by module (two levels deep) with their number of values."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        module = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        groups[module] = groups.get(module, 0) + sizes[key]
    return ", ".join(f"{m} {_count(n)}" for m, n in groups.items()) or "nothing"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def client_tasks(model: OmniFMTask | MultiTask, datamodule: Any) -> dict[str, str] | None:
    """Client name -> task for a ``MultiTask`` (``None`` for one task), checked to pair."""
    many = isinstance(model, MultiTask)
    if many != hasattr(datamodule, "client_tasks"):
        raise ValueError(
            "a MultiTask model needs a MultiTaskDataModule (and one task's model a federated "
            f"datamodule), got {type(model).__name__} with {type(datamodule).__name__}"
        )
    if not isinstance(model, MultiTask):
        return None
    if set(datamodule.tasks) != set(model.task_names()):
        raise ValueError(
            f"the model's tasks {model.task_names()} and the data's {list(datamodule.tasks)} "
            "differ; give model.init_args.tasks and data.init_args.tasks the same names"
        )
    return datamodule.client_tasks()
