"""Client partitioning: IID and Dirichlet splits, min_samples checks."""

from __future__ import annotations

import numpy as np
import pytest

from omnifm.datasets.partition import Partition, dirichlet_split, iid_split, split_indices


def _assert_disjoint_covering(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize(("n", "sites"), [(10, 3), (7, 7), (100, 4), (5, 1)])
def test_iid_split_is_disjoint_covering_and_balanced(n: int, sites: int) -> None:
    parts = iid_split(n, sites, seed=0)

    assert len(parts) == sites
    _assert_disjoint_covering(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_split_is_deterministic_per_seed() -> None:
    first, again, other = iid_split(50, 3, seed=1), iid_split(50, 3, seed=1), iid_split(50, 3, 2)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_split_is_disjoint_covering_and_deterministic() -> None:
    labels = np.repeat(np.arange(5), 40)

    parts = dirichlet_split(labels, sites=4, alpha=0.5, seed=3)
    again = dirichlet_split(labels, sites=4, alpha=0.5, seed=3)
    other = dirichlet_split(labels, sites=4, alpha=0.5, seed=4)

    _assert_disjoint_covering(parts, len(labels))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def _mean_majority_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    shares = [np.bincount(labels[p]).max() / len(p) for p in parts if len(p)]
    return float(np.mean(shares))


def test_dirichlet_small_alpha_is_skewed_and_large_alpha_is_not() -> None:
    labels = np.repeat(np.arange(4), 250)

    skewed = dirichlet_split(labels, sites=4, alpha=0.05, seed=0)
    even = dirichlet_split(labels, sites=4, alpha=1000.0, seed=0)

    assert _mean_majority_share(labels, skewed) > 0.7
    assert _mean_majority_share(labels, even) < 0.35


def test_split_indices_whole_keeps_everything() -> None:
    parts = split_indices(Partition(), np.zeros(9), seed=0, what="source 'a' split 'train'")

    assert len(parts) == 1
    assert np.array_equal(parts[0], np.arange(9))


def test_split_indices_dirichlet_respects_min_samples() -> None:
    labels = np.repeat(np.arange(3), 30)
    partition = Partition(kind="dirichlet", sites=3, alpha=0.3, min_samples=5)

    parts = split_indices(partition, labels, seed=0, what="source 'a' split 'train'")

    assert min(len(p) for p in parts) >= 5
    _assert_disjoint_covering(parts, len(labels))


def test_split_indices_iid_too_few_examples_names_source_and_fix() -> None:
    partition = Partition(kind="iid", sites=4, min_samples=2)

    with pytest.raises(ValueError, match="min_samples") as error:
        split_indices(partition, np.zeros(5), seed=0, what="source 'breast' split 'val'")

    message = str(error.value)
    assert message.startswith("source 'breast' split 'val': site ")
    assert "gets 1 example," in message
    assert "fewer than min_samples=2" in message
    assert "use fewer sites" in message


def test_split_indices_dirichlet_impossible_raises_after_retries() -> None:
    partition = Partition(kind="dirichlet", sites=5, alpha=0.5, min_samples=3)

    with pytest.raises(ValueError, match=r"source 'x' split 'test': site \d+ gets .* after 10"):
        split_indices(partition, np.arange(12) % 2, seed=0, what="source 'x' split 'test'")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "random"}, "unknown partition kind 'random'"),
        ({"kind": "whole", "sites": 2}, "use kind 'iid' or 'dirichlet'"),
        ({"kind": "iid", "sites": 0}, "sites must be >= 1"),
        ({"kind": "dirichlet", "sites": 2, "alpha": 0.0}, "alpha must be > 0"),
        ({"min_samples": -1}, "min_samples must be >= 0"),
    ],
)
def test_partition_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Partition(**kwargs)
