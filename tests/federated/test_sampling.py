import pytest

from omnifm.federated import ClientSampler

CLIENTS = [f"c{i}" for i in range(10)]


def test_fraction_and_determinism_per_round() -> None:
    a = ClientSampler(CLIENTS, fraction=0.2, seed=3)
    b = ClientSampler(CLIENTS, fraction=0.2, seed=3)
    picks = [a.sample(r) for r in range(1, 6)]
    assert all(len(p) == 2 and len(set(p)) == 2 for p in picks)
    assert [b.sample(r) for r in range(1, 6)] == picks  # same seed, same rounds
    assert b.sample(4) == picks[3]  # a round's choice depends on (seed, round) only
    assert len({tuple(p) for p in picks}) > 1  # different rounds pick different clients


def test_full_participation_and_min_clients() -> None:
    assert ClientSampler(CLIENTS, fraction=1.0).sample(1) == CLIENTS
    assert len(ClientSampler(CLIENTS, fraction=0.1, min_clients=3).sample(1)) == 3


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="fraction"):
        ClientSampler(CLIENTS, fraction=0.0)
    with pytest.raises(ValueError, match="min_clients=11"):
        ClientSampler(CLIENTS, min_clients=11)
