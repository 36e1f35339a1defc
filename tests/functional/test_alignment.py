import numpy as np
import torch
import torch.nn.functional as F

from omnifm.functional import cosine_topk, spalign_loss


def test_spalign_is_squared_distance_to_centroid() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    retrieved = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    # example 0: centroid (0.5, 0) -> 0.25; example 1: centroid (0, 1) -> 0
    torch.testing.assert_close(spalign_loss(s, retrieved), torch.tensor(0.125))


def test_spalign_empty_retrieval_is_zero_with_graph() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    loss = spalign_loss(s, torch.empty(3, 0, 4))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None


def test_cosine_topk_matches_numpy_across_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(1000, 16, generator=g), dim=-1)
    queries = torch.randn(7, 16, generator=g)
    sims, pos = cosine_topk(queries, keys, k=5, chunk_size=128)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    expected = np.argsort(-(q @ keys.numpy().T), axis=1)[:, :5]
    np.testing.assert_array_equal(pos.numpy(), expected)
    assert torch.all(sims[:, :-1] >= sims[:, 1:])


def test_cosine_topk_k_larger_than_keys_and_empty() -> None:
    keys = F.normalize(torch.randn(3, 4), dim=-1)
    assert cosine_topk(torch.randn(2, 4), keys, k=8)[1].shape == (2, 3)
    assert cosine_topk(torch.randn(2, 4), keys[:0], k=8)[1].shape == (2, 0)
