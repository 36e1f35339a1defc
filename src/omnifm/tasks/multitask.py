"""``MultiTask``: the tasks of a federation whose hospitals do different things."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningModule
from torch import Tensor, nn

from omnifm.blocks import OmniFMStack
from omnifm.tasks.base import OmniFMTask

__all__ = ["MultiTask", "keys_under"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def keys_under(keys: Iterator[str] | set[str], prefix: str) -> set[str]:
    """The state-dict keys of module ``prefix`` (``encoder.backbone``): itself and below."""
    return {k for k in keys if k == prefix or k.startswith(prefix + ".")}


class MultiTask(LightningModule):
    """Several tasks in one federation: each client trains the task of its hospital.

    The modules named in ``shared`` (state-dict prefixes: ``encoder.backbone``, ``stack``) are
    one model for every task and every client; the rest of a task (its head, decoder, text
    encoder) is shared among the clients of that task only; what the strategy keeps personal
    (OmniFM: the PSP suffix and the head) stays on each client. All tasks share the spectral
    bank. The tasks are built as in single-task recipes; a shared part must have the same keys
    and shapes in every task, which is checked here, before any round.

    Not trained directly: the federation trains each task on its own clients
    (``omnifm.federated.layout.Layout`` says which state goes where).

    Args:
        tasks: task name (letters, digits, ``-``, ``_``) -> its model.
        shared: state-dict prefixes shared across every task.

    Example::

        model = MultiTask(
            {"xray": ClassificationTask(num_classes=2, backbone="resnet18"),
             "polyp": SegmentationTask(num_classes=2, backbone="resnet18")},
            shared=["encoder.backbone", "stack"],
        )
    """

    def __init__(self, tasks: dict[str, OmniFMTask], shared: list[str] | None = None) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("tasks is empty; give each task a name and a model")
        for name, task in tasks.items():
            if not _NAME.match(name):
                raise ValueError(
                    f"task name {name!r} must start with a letter and hold only letters, "
                    "digits, '-' and '_'"
                )
            if not isinstance(task, OmniFMTask):
                raise ValueError(f"task {name!r} is a {type(task).__name__}, not an OmniFMTask")
        self.tasks = nn.ModuleDict(tasks)
        self.shared = list(shared if shared is not None else ["encoder.backbone", "stack"])
        self._check_shared()

    def task(self, name: str) -> OmniFMTask:
        return self.tasks[name]  # type: ignore[return-value]

    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def stack(self) -> OmniFMStack | None:
        """The first task's stack: where the spectral bank's settings are read from."""
        return self.task(self.task_names()[0]).stack

    def shared_keys(self, name: str) -> set[str]:
        """Task ``name``'s state-dict keys under the ``shared`` prefixes."""
        keys = set(self.task(name).state_dict())
        return set().union(*(keys_under(keys, p) for p in self.shared))

    def _check_shared(self) -> None:
        """One error before any round when a shared part differs between tasks."""
        names = self.task_names()
        stacks = {n: self.task(n).stack for n in names}
        with_stack = [n for n, s in stacks.items() if s is not None]
        if with_stack and len(with_stack) != len(names):
            without = sorted(set(names) - set(with_stack))
            raise ValueError(
                f"tasks {without} have stack: null but {with_stack} have the OmniFM stack; the "
                "tasks of a federation share one stack and spectral bank: give all or none a stack"
            )
        gskr = {n: stacks[n].gskr for n in with_stack}  # type: ignore[union-attr]
        if len(set(gskr.values())) > 1:
            raise ValueError(f"the tasks' stacks differ in gskr ({gskr}); set it the same")
        first = names[0]
        reference = self.task(first).state_dict()
        for prefix in self.shared:
            for name in names:
                state = self.task(name).state_dict()
                mine = keys_under(state, prefix)
                if not mine:
                    raise ValueError(
                        f"shared part {prefix!r} is not in task {name!r} "
                        f"({type(self.task(name)).__name__}): its state has no key under it. "
                        "Give every task that module (e.g. backbone: resnet18), or leave it "
                        "out of model.init_args.shared"
                    )
                theirs = keys_under(reference, prefix)
                _same_shapes(prefix, (first, reference, theirs), (name, state, mine))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "a MultiTask is not called itself: each client trains its task "
            "(MultiTask.task(name)); run it with omnifm fit or omnifm.federated.Federation"
        )


def _same_shapes(
    prefix: str,
    a: tuple[str, dict[str, Tensor], set[str]],
    b: tuple[str, dict[str, Tensor], set[str]],
) -> None:
    (name_a, state_a, keys_a), (name_b, state_b, keys_b) = a, b
    fix = (
        "give the tasks the same settings for it (backbone, in_channels of model and data, "
        "embed_dim, stack)"
    )
    if keys_a != keys_b:
        only = sorted(keys_a ^ keys_b)[0]
        owner = name_a if only in keys_a else name_b
        raise ValueError(
            f"tasks {name_a!r} and {name_b!r} name shared part {prefix!r} with different "
            f"modules: {only} is only in {owner!r}; {fix}"
        )
    for key in sorted(keys_a):
        if state_a[key].shape != state_b[key].shape:
            raise ValueError(
                f"tasks {name_a!r} and {name_b!r} name shared part {prefix!r} with different "
                f"shapes: {key} is {tuple(state_a[key].shape)} in {name_a!r} and "
                f"{tuple(state_b[key].shape)} in {name_b!r}; {fix}"
            )
