import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from omnifm.bank import BankSnapshot, SpectralBank


def filled_bank(n: int = 200, dim: int = 16, seed: int = 0, **kwargs) -> SpectralBank:
    bank = SpectralBank(
        dim, capacity=kwargs.pop("capacity", 10_000), merge_threshold=None, **kwargs
    )
    bank.update("a", "ct", torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), 0)
    return bank


def test_retrieval_matches_bruteforce_numpy_topk() -> None:
    # Prepare
    bank = filled_bank(500)
    queries = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    # Execute
    vectors, ids = bank.retrieve(queries, k=8)
    # Assert: numpy cosine top-k on the raw data
    keys = bank.vectors.numpy()
    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    expected = np.argsort(-(q @ keys.T), axis=1)[:, :8]
    np.testing.assert_array_equal(ids.numpy(), bank.ids.numpy()[expected])
    np.testing.assert_allclose(vectors.numpy(), keys[expected], atol=1e-6)
    assert not vectors.requires_grad


def test_snapshot_retrieves_like_the_bank_and_round_trips() -> None:
    bank = filled_bank(50)
    snap = BankSnapshot.from_state_dict(bank.snapshot().state_dict())
    q = torch.randn(4, 16)
    for a, b in zip(bank.retrieve(q, 3), snap.retrieve(q, 3), strict=True):
        torch.testing.assert_close(a, b)
    snap.vectors.zero_()  # a snapshot is a copy: the bank is untouched
    assert bank.vectors.abs().sum() > 0


def test_update_replaces_a_clients_old_entries() -> None:
    bank = SpectralBank(8, capacity=100, merge_threshold=None)
    bank.update("a", "ct", torch.randn(5, 8), round=0)
    bank.update("b", "mri", torch.randn(4, 8), round=0)
    bank.update("a", "ct", torch.randn(2, 8), round=1)
    assert len(bank) == 6
    assert int(bank.entries_of(client="a").sum()) == 2
    assert bank.round_added[bank.entries_of(client="a")].tolist() == [1, 1]
    assert int(bank.entries_of(modality="mri").sum()) == 4


def test_near_duplicates_merge_within_a_modality_only() -> None:
    bank = SpectralBank(4, capacity=100, merge_threshold=0.99)
    v = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.01, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    bank.update("a", "ct", v, round=0)
    assert len(bank) == 2 and bank.counts.tolist() == [2, 1]
    bank.update("b", "ct", v[:1], round=0)  # merges into a's entry, now owned by both
    bank.update("c", "mri", v[:1], round=0)  # another modality: kept apart
    assert len(bank) == 3 and bank.owners[0] == ["a", "b"]
    bank.update("a", "ct", torch.empty(0, 4), round=1)  # a leaves; b still holds the entry
    assert len(bank) == 2 and bank.owners[0] == ["b"]


def test_hits_follow_ids_and_pruning_drops_least_hit_first() -> None:
    bank = filled_bank(10)
    bank.record_hits(torch.tensor([[3, 3, 5], [7, 3, 5], [1, -1, 99]]))  # -1, 99: unknown ids
    assert bank.hits.tolist() == [0, 1, 0, 3, 0, 2, 0, 1, 0, 0]
    removed = bank.prune(capacity=4)
    assert len(bank) == 4 and sorted(bank.ids.tolist()) == [1, 3, 5, 7]
    assert sorted(removed.tolist()) == [0, 2, 4, 6, 8, 9]
    bank.record_hits(torch.tensor([7]))  # ids stay valid after entries moved
    assert bank.hits[bank.ids == 7].item() == 2


def test_pruning_keeps_min_share_of_a_rare_modality() -> None:
    bank = SpectralBank(8, capacity=100, min_share=0.2, merge_threshold=None)
    bank.update("big", "ct", torch.randn(90, 8), round=0)
    bank.update("rare", "pet", torch.randn(10, 8), round=0)
    bank.record_hits(bank.ids[bank.entries_of(modality="ct")].repeat(5))
    bank.prune(capacity=20)
    assert len(bank) == 20
    assert int(bank.entries_of(modality="pet").sum()) == 4  # floor(0.2 * 20)
    assert int(bank.entries_of(modality="ct").sum()) == 16


def test_fresh_uploads_are_not_pruned_before_they_could_be_retrieved() -> None:
    bank = SpectralBank(8, capacity=10, min_share=0.0, merge_threshold=None)
    bank.update("a", "ct", torch.randn(10, 8), round=0)
    bank.record_hits(bank.ids)
    bank.update("b", "ct", torch.randn(4, 8), round=1)
    assert len(bank) == 10 and int(bank.entries_of(client="b").sum()) == 4


def test_state_dict_round_trip_is_exact_with_weights_only_load() -> None:
    bank = SpectralBank(8, capacity=12, merge_threshold=0.95)
    bank.update("a", "ct", torch.randn(6, 8), round=0)
    bank.update("b", "mri", torch.randn(9, 8), round=2)
    bank.record_hits(bank.ids[:5])
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = SpectralBank(8)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in bank.state_dict().items():
        other = restored.state_dict()[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        else:
            assert value == other, key
    q = torch.randn(3, 8)
    assert torch.equal(bank.retrieve(q, 4)[1], restored.retrieve(q, 4)[1])


def test_empty_bank_is_valid() -> None:
    bank = SpectralBank(8)
    vectors, ids = bank.retrieve(torch.randn(3, 8), k=4)
    assert vectors.shape == (3, 0, 8) and ids.shape == (3, 0)
    bank.record_hits(ids)
    assert bank.prune().numel() == 0 and "entries=0" in repr(bank)


def test_bad_input_is_named() -> None:
    bank = SpectralBank(8)
    with pytest.raises(ValueError, match="client 'x'.*NaN"):
        bank.update("x", "ct", torch.full((2, 8), float("nan")), round=0)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        bank.update("x", "ct", torch.randn(2, 7), round=0)
    with pytest.raises(ValueError, match="capacity"):
        SpectralBank(8, capacity=0)


def test_a_refresh_keeps_the_clients_hit_counts() -> None:
    bank = SpectralBank(4, capacity=100, merge_threshold=None)
    bank.update("a", "ct", torch.eye(4)[:2], round=0)
    bank.update("b", "ct", torch.eye(4)[2:], round=0)
    bank.record_hits(torch.tensor([0, 0, 0, 1, 2]))
    bank.update("a", "ct", torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.1, 1.0, 0.0, 0.0]]), round=1)
    assert sorted(bank.hits.tolist()) == [0, 1, 1, 3]
    assert bank.hits[bank.entries_of(client="a")].tolist() == [3, 1]


def test_a_rare_modality_survives_pruning_among_200_clients_and_is_retrieved() -> None:
    # Prepare: 198 clients of three common modalities and 2 PET clients, 8 prototypes each
    # around their modality's centre; the recipes' bank (capacity 512, min_share 0.1)
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 32, generator=gen), dim=-1)
    modalities = ["ct", "mri", "x-ray"] * 66 + ["pet"] * 2
    clients = [f"site-{i}" for i in range(200)]

    def tokens(i: int, n: int = 8) -> Tensor:
        code = ["ct", "mri", "x-ray", "pet"].index(modalities[i])
        return centres[code] + 0.1 * torch.randn(n, 32, generator=gen)

    bank = SpectralBank(32, capacity=512, min_share=0.1)
    # Execute: a warm-up upload by everyone, then 30 rounds of 20 sampled clients that each
    # retrieve (hits) and upload fresh prototypes, as the server does
    for i, name in enumerate(clients):
        bank.update(name, modalities[i], tokens(i), round=0)
    for round_ in range(1, 31):
        for i in torch.randperm(200, generator=gen)[:20].tolist():
            bank.record_hits(bank.snapshot().retrieve(tokens(i, 32), k=8)[1])
            bank.update(clients[i], modalities[i], tokens(i), round=round_)
    # Assert: the bank is full, all 16 PET prototypes survived, and a PET site retrieves them
    assert len(bank) == 512
    assert int(bank.entries_of(modality="pet").sum()) == 16
    _, ids = bank.retrieve(tokens(199, 4), k=8)
    pet_ids = set(bank.ids[bank.entries_of(modality="pet")].tolist())
    assert set(ids.flatten().tolist()) <= pet_ids
