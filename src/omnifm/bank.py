"""The spectral knowledge bank: server-side spectral prototypes tagged by modality and owner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnifm.blocks.retrieval import Retriever
from omnifm.functional import cosine_topk

__all__ = ["BankSnapshot", "Retriever", "SpectralBank"]


def _retrieve(vectors: Tensor, ids: Tensor, dim: int, queries: Tensor, k: int):
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be (B, {dim}), got {tuple(queries.shape)}")
    _, pos = cosine_topk(queries.detach().to(vectors.device), vectors, k)
    # index_select + view is the same as vectors[pos], ~4x faster (benchmarks/bank_retrieval.py)
    found = vectors.index_select(0, pos.reshape(-1)).view(*pos.shape, dim)
    return found.to(queries.device), ids[pos].to(queries.device)


@dataclass(frozen=True)
class BankSnapshot:
    """A read-only copy of the bank's vectors and entry ids, sent to (remote) clients."""

    vectors: Tensor
    ids: Tensor
    modalities: tuple[str, ...]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def retrieve(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` prototypes ``(B, k', dim)`` by cosine similarity and their entry ids."""
        return _retrieve(self.vectors, self.ids, self.dim, queries, k)

    def to(self, device: torch.device | str) -> BankSnapshot:
        return BankSnapshot(self.vectors.to(device), self.ids.to(device), self.modalities)

    def state_dict(self) -> dict[str, Any]:
        return {"vectors": self.vectors, "ids": self.ids, "modalities": list(self.modalities)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BankSnapshot:
        return cls(state["vectors"], state["ids"], tuple(state["modalities"]))


class SpectralBank:
    """Global Spectral Knowledge Retrieval (GSKR) bank.

    Each entry is an L2-normalised prototype with a modality tag, the clients that own it, the
    round it was last refreshed, a retrieval-hit count and a stable id (what ``retrieve``
    returns and ``record_hits`` takes, so hits stay correct across updates and pruning).

    Args:
        dim: prototype dimension.
        capacity: maximum number of entries kept after pruning.
        min_share: fraction of ``capacity`` each present modality keeps (its most retrieved
            entries) so rare modalities are not starved by frequent ones.
        merge_threshold: entries of one modality whose cosine similarity reaches this merge
            into one (count-weighted mean); ``None`` disables merging.

    Example:
        >>> bank = SpectralBank(dim=4, capacity=8)
        >>> bank.update("hospital-a", "ct", torch.eye(4)[:2], round=0)
        >>> vectors, ids = bank.retrieve(torch.tensor([[1.0, 0.1, 0.0, 0.0]]), k=1)
        >>> ids.tolist()
        [[0]]
    """

    def __init__(
        self,
        dim: int,
        capacity: int = 1024,
        min_share: float = 0.1,
        merge_threshold: float | None = 0.999,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1], got {min_share}")
        if merge_threshold is not None and not -1.0 <= merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be a cosine in [-1, 1], got {merge_threshold}")
        # plain Python numbers (not CLI number subclasses), so state_dict() loads weights_only
        self.dim = int(dim)
        self.capacity = int(capacity)
        self.min_share = float(min_share)
        self.merge_threshold = None if merge_threshold is None else float(merge_threshold)
        self.round = 0
        self._next_id = 0
        self.vectors = torch.empty(0, dim)
        self.ids = torch.empty(0, dtype=torch.long)
        self.modality = torch.empty(0, dtype=torch.long)
        self.round_added = torch.empty(0, dtype=torch.long)
        self.hits = torch.empty(0, dtype=torch.long)
        self.counts = torch.empty(0, dtype=torch.long)
        self.owners: list[list[str]] = []
        self.modalities: list[str] = []

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __repr__(self) -> str:
        per = {m: int((self.modality == i).sum()) for i, m in enumerate(self.modalities)}
        return (
            f"SpectralBank(dim={self.dim}, entries={len(self)}/{self.capacity}, per_modality={per})"
        )

    # retrieval ---------------------------------------------------------------------------
    def retrieve(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` prototypes ``(B, min(k, len), dim)`` by cosine similarity and their ids."""
        return _retrieve(self.vectors, self.ids, self.dim, queries, k)

    def snapshot(self) -> BankSnapshot:
        """A read-only copy for clients; retrieving from it gives the same result as the bank."""
        return BankSnapshot(self.vectors.clone(), self.ids.clone(), tuple(self.modalities))

    def positions(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Positions of the entries with these ids, and which of ``ids`` (flattened) are
        still in the bank: ``(positions of the found ones, found mask)``."""
        ids = ids.detach().reshape(-1).cpu().long()
        if len(self) == 0:
            return ids[:0], torch.zeros(ids.shape, dtype=torch.bool)
        pos = torch.searchsorted(self.ids, ids).clamp_max(len(self) - 1)
        found = self.ids[pos] == ids
        return pos[found], found

    def record_hits(self, ids: Tensor) -> None:
        """Count retrievals of entry ids (any shape; ids no longer in the bank are ignored)."""
        pos, _ = self.positions(ids)
        if pos.numel():
            self.hits += torch.bincount(pos, minlength=len(self))

    def entries_of(self, modality: str | None = None, client: str | None = None) -> Tensor:
        """Boolean mask of entries with this modality and/or owned by this client."""
        mask = torch.ones(len(self), dtype=torch.bool)
        if modality is not None:
            code = self.modalities.index(modality) if modality in self.modalities else -1
            mask &= self.modality == code
        if client is not None:
            mask &= torch.tensor([client in o for o in self.owners], dtype=torch.bool)
        return mask

    # updates -----------------------------------------------------------------------------
    def update(self, client_id: str, modality: str, prototypes: Tensor, round: int) -> None:
        """Replace ``client_id``'s entries with ``prototypes`` (``(n, dim)``), then prune.

        Near-duplicates (same modality) merge into existing entries, which then have several
        owners. The hits of the entries the client alone owned pass to the most similar of its
        new entries, so retrieval statistics survive a refresh.
        """
        if prototypes.ndim != 2 or prototypes.shape[1] != self.dim:
            raise ValueError(
                f"prototypes from client {client_id!r} must be (n, {self.dim}), "
                f"got {tuple(prototypes.shape)}"
            )
        if not torch.isfinite(prototypes).all():
            raise ValueError(f"prototypes from client {client_id!r} contain NaN or inf")
        self.round = max(self.round, round)
        mine = torch.tensor([o == [client_id] for o in self.owners], dtype=torch.bool)
        carried_vectors, carried_hits = self.vectors[mine], self.hits[mine]
        self._release(client_id)
        if modality not in self.modalities:
            self.modalities.append(modality)
        code = self.modalities.index(modality)
        new, counts = self._dedup(F.normalize(prototypes.detach().float().cpu(), dim=-1))
        fresh = torch.ones(len(new), dtype=torch.bool)
        targets: list[int] = []
        same = (self.modality == code).nonzero().flatten()
        if self.merge_threshold is not None and same.numel() and len(new):
            sims, best = (new @ self.vectors[same].T).max(dim=1)
            for i in (sims >= self.merge_threshold).nonzero().flatten().tolist():
                targets.append(int(same[best[i]]))
                self._merge_into(targets[-1], new[i], int(counts[i]), client_id, round)
                fresh[i] = False
        targets += range(len(self), len(self) + int(fresh.sum()))
        self._append(new[fresh], code, client_id, round, counts[fresh])
        if targets and len(carried_hits):  # a refresh keeps the client's retrieval statistics
            target = torch.tensor(targets)
            nearest = (carried_vectors @ self.vectors[target].T).argmax(dim=1)
            self.hits.index_add_(0, target[nearest], carried_hits)
        self.prune()

    def _release(self, client_id: str) -> None:
        for owners in self.owners:
            if client_id in owners:
                owners.remove(client_id)
        self._keep(torch.tensor([bool(o) for o in self.owners], dtype=torch.bool))

    def _dedup(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """Greedily merge near-duplicates within one upload; returns vectors and counts."""
        if self.merge_threshold is None or len(vectors) < 2:
            return vectors, torch.ones(len(vectors), dtype=torch.long)
        kept: list[Tensor] = []
        counts: list[int] = []
        for v in vectors:
            sims = torch.stack(kept) @ v if kept else torch.empty(0)
            if sims.numel() and sims.max() >= self.merge_threshold:
                j = int(sims.argmax())
                kept[j] = F.normalize(kept[j] * counts[j] + v, dim=0)
                counts[j] += 1
            else:
                kept.append(v)
                counts.append(1)
        return torch.stack(kept), torch.tensor(counts, dtype=torch.long)

    def _merge_into(self, pos: int, vector: Tensor, count: int, client: str, round: int) -> None:
        total = self.counts[pos] + count
        mixed = self.vectors[pos] * self.counts[pos] + vector * count
        self.vectors[pos] = F.normalize(mixed / total, dim=0)
        self.counts[pos] = total
        self.round_added[pos] = round
        if client not in self.owners[pos]:
            self.owners[pos].append(client)

    def _append(self, vectors: Tensor, code: int, client: str, round: int, counts: Tensor) -> None:
        n = len(vectors)
        self.vectors = torch.cat([self.vectors, vectors])
        self.ids = torch.cat([self.ids, torch.arange(self._next_id, self._next_id + n)])
        self.modality = torch.cat([self.modality, torch.full((n,), code, dtype=torch.long)])
        self.round_added = torch.cat([self.round_added, torch.full((n,), round, dtype=torch.long)])
        self.hits = torch.cat([self.hits, torch.zeros(n, dtype=torch.long)])
        self.counts = torch.cat([self.counts, counts])
        self.owners.extend([client] for _ in range(n))
        self._next_id += n

    def _keep(self, mask: Tensor) -> None:
        self.vectors = self.vectors[mask]
        self.ids = self.ids[mask]
        self.modality = self.modality[mask]
        self.round_added = self.round_added[mask]
        self.hits = self.hits[mask]
        self.counts = self.counts[mask]
        self.owners = [o for o, keep in zip(self.owners, mask.tolist(), strict=True) if keep]

    # pruning -----------------------------------------------------------------------------
    def retrieval_frequency(self) -> Tensor:
        """Hits per round of life of each entry."""
        age = (self.round - self.round_added).clamp_min(0) + 1
        return self.hits.double() / age.double()

    def _rank(self) -> Tensor:
        """Entry positions, most worth keeping first: fresh, then frequent, then recent."""
        fresh = self.round_added == self.round
        order = torch.argsort(self.round_added, descending=True, stable=True)
        order = order[
            torch.argsort(self.retrieval_frequency()[order], descending=True, stable=True)
        ]
        return order[torch.argsort(fresh[order].long(), descending=True, stable=True)]

    def prune(self, capacity: int | None = None) -> Tensor:
        """Keep at most ``capacity`` entries; returns the ids removed.

        Every present modality first keeps its ``floor(min_share * capacity)`` most retrieved
        entries (or all it has); the remaining slots go to the most retrieved entries overall.
        Entries refreshed in the latest round outrank older ones, since they have not yet been
        exposed to retrieval; within each group the least retrieved (per round of life) go first.
        """
        capacity = self.capacity if capacity is None else capacity
        if len(self) <= capacity:
            return torch.empty(0, dtype=torch.long)
        order = self._rank()
        present = self.modality.unique()
        reserve = min(int(self.min_share * capacity), capacity // len(present))
        keep = torch.zeros(len(self), dtype=torch.bool)
        for code in present:
            ranked = order[self.modality[order] == code]
            keep[ranked[:reserve]] = True
        free = capacity - int(keep.sum())
        rest = order[~keep[order]]
        keep[rest[:free]] = True
        removed = self.ids[~keep]
        self._keep(keep)
        return removed

    # state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and strings only: loads with ``torch.load(weights_only=True)``."""
        return {
            "dim": self.dim,
            "capacity": self.capacity,
            "min_share": self.min_share,
            "merge_threshold": self.merge_threshold,
            "round": self.round,
            "next_id": self._next_id,
            "vectors": self.vectors.clone(),
            "ids": self.ids.clone(),
            "modality": self.modality.clone(),
            "round_added": self.round_added.clone(),
            "hits": self.hits.clone(),
            "counts": self.counts.clone(),
            "owners": [list(o) for o in self.owners],
            "modalities": list(self.modalities),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["dim"] != self.dim:
            raise ValueError(f"bank state has dim {state['dim']}, this bank has dim {self.dim}")
        self.capacity = state["capacity"]
        self.min_share = state["min_share"]
        self.merge_threshold = state["merge_threshold"]
        self.round = state["round"]
        self._next_id = state["next_id"]
        for name in ("vectors", "ids", "modality", "round_added", "hits", "counts"):
            setattr(self, name, state[name].clone())
        self.owners = [list(o) for o in state["owners"]]
        self.modalities = list(state["modalities"])
