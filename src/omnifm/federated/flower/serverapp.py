"""The server side on Flower: our round loop, reaching the clients through a Flower ``Grid``.

Sampling, aggregation, the bank update and pruning, TensorBoard and CSV logs and checkpoints
are ``RoundLoop``'s, the same code as in process; only the exchange with the clients is
Flower's. A client that raises, or whose node Flower declares gone, or that does not reply
within ``flower.round_timeout``, is left out of the round like a failing client in process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from omnifm.federated.aggregators import Mean
from omnifm.federated.config import FlowerConfig
from omnifm.federated.flower.allowlist import SERVER_ENV, SERVER_HOW, Allowlist
from omnifm.federated.flower.records import (
    CONFIG,
    UPLOAD,
    WEIGHTS,
    evaluate_res_from_records,
    fit_ins_to_records,
    fit_res_from_records,
    secure_fit_res,
    shared_records,
    tensors,
    with_config,
)
from omnifm.federated.flower.secure import secure_round
from omnifm.federated.layout import client_tasks
from omnifm.federated.messages import FitRes
from omnifm.federated.rounds import FederationError, RoundLoop, Stage, Upload
from omnifm.recipe import Recipe, load_recipe

__all__ = ["FlowerFederation", "make_server_app", "server_app"]

log = logging.getLogger("omnifm")
POLL_S = 0.5  # how often the server asks the SuperLink for replies


class FlowerFederation(RoundLoop):
    """A federation whose clients are Flower nodes, one per client of the recipe's scenario.

    ``fit`` first asks every connected node which client it plays (with the bank warm-up's
    spectral prototypes in the same reply), then runs the rounds. Personal states stay on the
    nodes, so checkpoints hold the server's state only and a run cannot resume.
    """

    def __init__(self, grid: Grid, recipe: Recipe, options: FlowerConfig | None = None) -> None:
        names = recipe.datamodule.client_names()
        tasks = client_tasks(recipe.model, recipe.datamodule)
        super().__init__(recipe.model, names, recipe.config, recipe.text, tasks)
        self.grid = grid
        self.options = options or recipe.config.flower
        self.modalities = {n: recipe.datamodule.modality(n) for n in names}
        self.nodes: dict[str, int] = {}
        self._uploads: list[Upload] = []
        if self.options.secure_aggregation is not None:
            _check_secure(self)

    def fit(self, ckpt_path: str | None = None) -> list[dict[str, Any]]:
        if ckpt_path is not None:
            raise ValueError(
                "a Flower run cannot resume from a checkpoint: the clients' personal states "
                "live on the sites and end with the run; start a new run without --ckpt_path"
            )
        self.connect()
        return super().fit()

    def connect(self) -> None:
        """Wait for the nodes, then learn which client each plays (and its warm-up upload)."""
        cfg = self.config
        deadline = time.monotonic() + self.options.connect_timeout
        nodes = list(self.grid.get_node_ids())
        while len(nodes) < len(self.client_names) and time.monotonic() < deadline:
            time.sleep(1.0)
            nodes = list(self.grid.get_node_ids())
        warm = self.server.bank is not None and cfg.bank.warmup
        config = {"seed": cfg.seed, "prototypes": self.server.prototypes_per_client if warm else 0}
        content = RecordDict({CONFIG: ConfigRecord(config)})
        if warm:
            content[WEIGHTS] = ArrayRecord(self.server.shared)
        messages = [Message(content, node, MessageType.QUERY) for node in nodes]
        replies = self._exchange(messages, self.options.round_timeout)
        uploads: dict[str, Upload] = {}
        failed: dict[int, str] = {}  # e.g. a site that refused the recipe
        for i, node in enumerate(nodes):
            reply = replies.get(i)
            if reply is None or reply.has_error():
                failed[node] = _why(reply)
                log.warning("node %d did not say which client it is: %s", node, failed[node])
                continue
            name = str(reply.content.config_records[CONFIG]["client"])
            if name in self.nodes:
                raise FederationError(
                    f"nodes {self.nodes[name]} and {node} both say they are client {name!r}; "
                    "give every SuperNode its own --node-config client=NAME"
                )
            self.nodes[name] = node
            error = reply.content.config_records[CONFIG].get("warmup_error")
            if error:
                log.warning("bank warm-up: client %s left out: %s", name, error)
            if UPLOAD in reply.content.array_records:
                protos = tensors(reply.content.array_records[UPLOAD])["prototypes"]
                uploads[name] = (name, self.modalities[name], protos)
        self._uploads = [uploads[n] for n in self.client_names if n in uploads]
        missing = [n for n in self.client_names if n not in self.nodes]
        log.info(
            "Flower: %d of %d clients connected (%s)",
            len(self.nodes),
            len(self.client_names),
            ", ".join(f"{n}: node {i}" for n, i in self.nodes.items()),
        )
        if missing:
            log.warning("no node plays clients %s: they are left out of every round", missing)
        if len(self.nodes) < cfg.min_clients:
            why = ""
            if failed:  # say why, e.g. the sites refused the recipe
                first, reason = next(iter(failed.items()))
                why = f"; {len(failed)} nodes failed, node {first}: {reason}"
            raise FederationError(
                f"{len(self.nodes)} clients connected within {self.options.connect_timeout:.0f}"
                f" s, fewer than min_clients={cfg.min_clients}; start a SuperNode per site "
                f"(--node-config client=NAME) or raise federation.flower.connect_timeout{why}"
            )

    # the clients, through the grid -----------------------------------------------------------
    def warmup_uploads(self) -> list[Upload]:
        return self._uploads

    def fit_clients(self, round_: int, chosen: list[str]) -> Iterator[tuple[str, FitRes | str]]:
        if self.options.secure_aggregation is not None:
            yield from self._fit_secure(round_, chosen)
            return
        start = time.perf_counter()
        reached = [n for n in chosen if n in self.nodes]
        bank = self.server.bank_snapshot()
        shared = shared_records(self.server.shared, bank, self.server.broadcast())
        messages = [
            Message(
                fit_ins_to_records(self.server.fit_ins(round_, n), n, shared),
                self.nodes[n],
                MessageType.TRAIN,
                group_id=str(round_),
            )
            for n in reached
        ]
        replies = _in_order(self._arrivals(messages, self.options.round_timeout), len(reached))
        received = 0
        for name in chosen:
            if name not in self.nodes:
                yield name, "no node plays this client"
                continue
            reply = next(replies)
            if reply is None or reply.has_error():
                why = _why(reply, self.options.round_timeout)
                log.warning("  %s failed and is left out of round %d: %s", name, round_, why)
                yield name, why
                continue
            res = fit_res_from_records(reply.content)
            del reply  # the records: only the decoded result is folded in
            received += 1
            log.info(
                "  %-16s %-12s loss %.4f",
                name,
                res.modality,
                res.metrics.get("train/loss", float("nan")),
            )
            yield name, res
        log.info("  round %d: %d replies in %.1fs", round_, received, time.perf_counter() - start)

    def _fit_secure(self, round_: int, chosen: list[str]) -> Iterator[tuple[str, FitRes | str]]:
        """A round under SecAgg+ (``secure.secure_round``): the server learns the mean of
        the sites' updates only. Each site's result carries that mean as its shared state
        (with its own integer buffers, sent in the clear), so that the round's
        example-weighted aggregate is the mean itself."""
        options = self.options.secure_aggregation
        assert options is not None
        start = time.perf_counter()
        reached = [n for n in chosen if n in self.nodes]
        bank = self.server.bank_snapshot()
        shared = shared_records(self.server.shared, bank, self.server.broadcast())
        secure = {
            "secure": True,
            "max_weight": float(options.max_weight),
            "clipping_range": float(options.clipping_range),
        }
        fit_ins = {
            self.nodes[n]: fit_ins_to_records(self.server.fit_ins(round_, n), n, shared, secure)
            for n in reached
        }
        out = secure_round(self.grid, round_, fit_ins, options)
        current = {k: v for k, v in self.server.shared.items() if v.is_floating_point()}
        mean = {}
        if out.mean is not None:
            mean = {
                k: (v.double() + torch.from_numpy(u).view(v.shape)).to(v.dtype)
                for (k, v), u in zip(current.items(), out.mean, strict=True)
            }
        why = "; ".join(out.failures[:2]) or "left out of the secure aggregation"
        for name in chosen:
            reply = out.replies.get(self.nodes.get(name, -1))
            if reply is None or not mean:
                why_here = "no node plays this client" if name not in self.nodes else why
                log.warning("  %s failed and is left out of round %d: %s", name, round_, why_here)
                yield name, why_here
                continue
            res = secure_fit_res(reply.content, mean)
            log.info(
                "  %-16s %-12s loss %.4f (masked)",
                name,
                res.modality,
                res.metrics.get("train/loss", float("nan")),
            )
            yield name, res
        log.info(
            "  round %d: secure aggregation of %d sites in %.1fs",
            round_,
            len(out.replies),
            time.perf_counter() - start,
        )

    def evaluate_clients(self, stage: Stage) -> list[dict[str, Any]]:
        bank = self.server.bank_snapshot()
        shared = shared_records(self.server.shared, bank)
        reached = [n for n in self.client_names if n in self.nodes]
        messages = [
            Message(
                with_config(shared, {"client": n, "stage": stage}),
                self.nodes[n],
                MessageType.EVALUATE,
            )
            for n in reached
        ]
        replies = dict(zip(reached, self._exchange_list(messages), strict=True))
        rows: list[dict[str, Any]] = []
        for name in self.client_names:
            row = {"client": name, "modality": self.modalities[name]}
            reply = replies.get(name)
            if reply is None or reply.has_error():
                why = "no node plays this client" if name not in self.nodes else _why(reply)
                log.warning("%s of client %s failed: %s", stage, name, why)
                rows.append({**row, "error": why})
                continue
            rows.append({**row, **evaluate_res_from_records(reply.content).metrics})
        return rows

    # the exchange ----------------------------------------------------------------------------
    def _exchange_list(self, messages: list[Message]) -> list[Message | None]:
        replies = self._exchange(messages, self.options.round_timeout)
        return [replies.get(i) for i in range(len(messages))]

    def _exchange(self, messages: list[Message], timeout: float | None) -> dict[int, Message]:
        """Push ``messages``; their replies by message index (Flower's error replies
        included), once all replied or ``timeout`` seconds passed."""
        return dict(self._arrivals(messages, timeout))

    def _arrivals(
        self, messages: list[Message], timeout: float | None
    ) -> Iterator[tuple[int, Message]]:
        """Push ``messages``; ``(index, reply)`` as each reply comes (Flower's error replies
        included), until all replied or ``timeout`` seconds passed."""
        if not messages:
            return
        ids = self.grid.push_messages(messages)  # None: refused (e.g. an unknown node)
        pending = {mid: i for i, mid in enumerate(ids) if mid is not None}
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending and (deadline is None or time.monotonic() < deadline):
            for reply in self.grid.pull_messages(list(pending)):
                i = pending.pop(reply.metadata.reply_to_message_id, None)
                if i is not None:
                    yield i, reply
            if pending:
                time.sleep(POLL_S)


def _in_order(arrivals: Iterator[tuple[int, Message]], n: int) -> Iterator[Message | None]:
    """The replies to messages ``0..n-1`` in message order (``None``: no reply): each one
    as soon as it and those before it came; only replies that arrive early are held."""
    early: dict[int, Message] = {}
    for i in range(n):
        while i not in early:
            arrived = next(arrivals, None)
            if arrived is None:  # every reply that will come has come
                break
            early[arrived[0]] = arrived[1]
        yield early.pop(i, None)


def _check_secure(run: FlowerFederation) -> None:
    """SecAgg+ gives the server the example-weighted mean of one shared state: refuse what
    needs more (a robust aggregator, a strategy's own sums or uploads, several tasks)."""
    server = run.server
    problems = []
    if len(server.layout.scopes) != 1:
        problems.append("a federation of several tasks (each task's state is its own sum)")
    if server.aggregator is not None and type(server.aggregator) is not Mean:
        problems.append(f"the aggregator {server.aggregator} (it needs every site's state)")
    if server.strategy.needs_each_client:
        problems.append(f"the strategy {server.strategy} (it needs more than the mean state)")
    if problems:
        raise ValueError(
            "federation.flower.secure_aggregation: the server learns only the mean of the "
            f"sites' updates, which cannot serve {'; '.join(problems)}. Use the Mean "
            "aggregator and FedAvg, FedProx, FedPer, FedBN, OmniFM, the server optimizers, "
            "FedRep, Ditto, MOON or GPFL, or turn secure aggregation off"
        )


def _why(reply: Message | None, timeout: float | None = None) -> str:
    if reply is None:
        return f"no reply within {timeout} s" if timeout is not None else "no reply"
    return f"{reply.error.reason} (Flower error code {reply.error.code})"


def make_server_app(
    recipe_text: str | None = None, results: list[dict[str, Any]] | None = None
) -> ServerApp:
    """A ServerApp that runs the recipe ``recipe_text`` (None: the run config's ``recipe``);
    the final test rows are appended to ``results`` when given."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            logging.getLogger("httpx").setLevel(logging.WARNING)  # not every request to the link
        text = recipe_text or str(context.run_config.get("recipe", ""))
        if not text:
            raise ValueError(
                "the run has no recipe: start it with `omnifm fit --config RECIPE "
                "--federation.backend flower --federation.flower.superlink NAME`"
            )
        # a recipe sent with the run names only allowed classes here too (as on the sites)
        sent = recipe_text is None
        allowlist = Allowlist.from_text(os.environ.get(SERVER_ENV), SERVER_HOW) if sent else None
        rows = FlowerFederation(grid, load_recipe(text, allowlist=allowlist)).fit()
        if results is not None:
            results.extend(rows)

    return app


server_app = make_server_app()
