"""The hospitals of a many-task federation: one federated datamodule per task."""

from __future__ import annotations

from typing import Any

from lightning import LightningDataModule

from omnifm.datamodules.federated import UnknownClientError

__all__ = ["MultiTaskDataModule"]

# what a task's model takes from its data (the CLI links them per task, as for one task)
LINKED = ("num_classes", "in_channels", "task_type", "questions")


class MultiTaskDataModule(LightningDataModule):
    """Task name -> that task's federated datamodule (``FederatedDataModule``): its clients
    are the hospitals that run the task. Client names are unique across tasks.

    Pairs with ``omnifm.tasks.MultiTask`` (the same task names): ``omnifm fit`` links each
    task's ``num_classes``, ``in_channels``, ``task_type`` and ``questions`` from its data.
    """

    def __init__(self, tasks: dict[str, LightningDataModule]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("tasks is empty; give each task a federated datamodule")
        self.tasks = dict(tasks)
        self._task_of: dict[str, str] = {}
        for task, data in self.tasks.items():
            for name in data.client_names():
                if name in self._task_of:
                    raise ValueError(
                        f"client {name!r} is in task {self._task_of[name]!r} and in task "
                        f"{task!r}; give every hospital its own client name"
                    )
                self._task_of[name] = task

    def task_of(self, client: str) -> str:
        """The task client ``client`` runs."""
        if client not in self._task_of:
            raise UnknownClientError(
                f"unknown client {client!r}; known clients: {self.client_names()}"
            )
        return self._task_of[client]

    def client_tasks(self) -> dict[str, str]:
        """Every client's task, in client order."""
        return dict(self._task_of)

    def client_names(self) -> list[str]:
        return list(self._task_of)

    def _owner(self, client: str) -> Any:
        return self.tasks[self.task_of(client)]

    def modality(self, client: str) -> str:
        return self._owner(client).modality(client)

    def client_datamodule(self, client: str) -> LightningDataModule:
        return self._owner(client).client_datamodule(client)

    def site_datamodule(self, client: str) -> LightningDataModule:
        """What a Flower site loads: only its own task's data."""
        return self._owner(client).site_datamodule(client)

    def prepare_data(self) -> None:
        for data in self.tasks.values():
            data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for data in self.tasks.values():
            data.setup(stage)
