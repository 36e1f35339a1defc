import itertools

import pytest
import torch

from omnifm.bank import SpectralBank
from omnifm.blocks import (
    DenseBridge,
    EmbeddingCrossAttention,
    OmniFMStack,
    PrefixSuffixPrompt,
    SpectralTokenizer,
)

FLAGS = ("gskr", "eca", "psp", "spalign")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def device_or_skip(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device(device)


def bank_for(dim: int, n: int = 20) -> SpectralBank:
    bank = SpectralBank(dim, capacity=100, merge_threshold=None)
    bank.update("a", "ct", torch.randn(n, dim), round=0)
    return bank


@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 32), (4, 45)])
def test_tokenizer_any_channels_and_size_gives_unit_tokens(channels: int, size: int) -> None:
    tokenizer = SpectralTokenizer(dim=24, low_pass_size=16)
    s = tokenizer(torch.rand(5, channels, size, size + 3))
    assert s.shape == (5, 24)
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(5))


def test_tokenizer_volumes_and_too_small_images() -> None:
    tokenizer = SpectralTokenizer(dim=8, low_pass_size=4, spatial_dims=3)
    assert tokenizer(torch.rand(2, 1, 6, 8, 10)).shape == (2, 8)
    with pytest.raises(ValueError, match="larger images"):
        SpectralTokenizer(dim=8, low_pass_size=16)(torch.rand(1, 1, 8, 8))


def test_tokenizer_ignores_intensity_scale_and_circular_shift() -> None:
    tokenizer = SpectralTokenizer(dim=8, low_pass_size=8).double()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(tokenizer(3 * torch.roll(x, 4, dims=-1)), tokenizer(x))


def test_eca_shapes_and_empty_context() -> None:
    eca = EmbeddingCrossAttention(dim=16, context_dim=8, num_heads=4)
    r = torch.randn(3, 5, 16)
    assert eca(r, torch.randn(3, 4, 8)).shape == (3, 5, 16)
    z = eca(r, torch.empty(3, 0, 8))  # learned null slot only
    assert z.shape == (3, 5, 16) and torch.isfinite(z).all()
    weights = eca.attention_weights(r, torch.randn(3, 4, 8))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))


def test_psp_layout_and_personal_parameters() -> None:
    psp = PrefixSuffixPrompt(dim=8, num_prefix=2)
    r, z = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    tokens = psp(z, r)
    assert tokens.shape == (3, 2 + 5 + 1, 8)
    prefix, back, suffix = psp.split(tokens, 5)
    assert torch.equal(back, r) and prefix.shape == (3, 2, 8)
    torch.testing.assert_close(suffix, psp.suffix[0].expand(3, -1))
    assert psp(None, r).shape == (3, 6, 8)
    assert PrefixSuffixPrompt(dim=8, num_prefix=None)(z, r).shape == (3, 11, 8)
    assert psp.personal_parameter_names() == ["suffix"]


def test_gradients_reach_every_parameter_of_the_stack_and_none_the_bank() -> None:
    # Prepare
    stack = OmniFMStack(dim=32, spectral_dim=16, low_pass_size=8, num_heads=4, num_layers=2)
    bank = bank_for(16)
    # Execute
    out = stack(torch.rand(4, 3, 32, 32), torch.randn(4, 6, 32), bank)
    (out.tokens.square().mean() + out.suffix.square().mean() + out.align).backward()
    # Assert
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert not bank.vectors.requires_grad and bank.vectors.grad is None
    assert out.hit_ids.shape == (4, 8) and out.align.item() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stack_runs_with_every_component_on_and_off(spatial_dims: int, device: str) -> None:
    dev = device_or_skip(device)
    shape = (2, 1, 8, 8, 8) if spatial_dims == 3 else (2, 3, 16, 16)
    image, tokens = torch.rand(shape, device=dev), torch.randn(2, 5, 16, device=dev)
    bank = bank_for(8)
    for values in itertools.product([True, False], repeat=4):
        flags = dict(zip(FLAGS, values, strict=True))
        stack = OmniFMStack(
            16, 8, low_pass_size=4, spatial_dims=spatial_dims, num_layers=1, **flags
        ).to(dev)
        out = stack(image, tokens, bank)
        assert out.tokens.shape == (2, 5, 16) and out.suffix.shape == (2, 16), flags
        assert out.tokens.device.type == dev.type
        assert torch.isfinite(out.tokens).all() and torch.isfinite(out.align)
        assert (out.hit_ids.shape[1] == 8) == flags["gskr"]
        assert (out.align.item() > 0) == (flags["gskr"] and flags["spalign"])
        assert stack.personal_parameter_names() == (["psp.suffix"] if flags["psp"] else [])


def test_all_off_without_layers_is_identity_and_empty_bank_is_fine() -> None:
    plain = OmniFMStack(16, 8, gskr=False, eca=False, psp=False, spalign=False, num_layers=0)
    tokens = torch.randn(2, 5, 16)
    out = plain(torch.rand(2, 1, 16, 16), tokens)
    assert torch.equal(out.tokens, tokens) and out.spectral is None
    assert sum(p.numel() for p in plain.parameters()) == 0
    full = OmniFMStack(16, 8, low_pass_size=8)
    out = full(torch.rand(2, 1, 16, 16), tokens, SpectralBank(8))
    assert out.hit_ids.shape == (2, 0) and out.align.item() == 0.0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_fresh_dense_bridge_leaves_the_features_as_they_are(spatial_dims: int) -> None:
    bridge = DenseBridge(channels=4, dim=8, patch=2, spatial_dims=spatial_dims)
    x = torch.randn(2, 4, *[6] * spatial_dims)
    tokens = bridge.tokens(x)
    assert tokens.shape == (2, 3**spatial_dims, 8)
    enriched = torch.randn_like(tokens, requires_grad=True)
    suffix = torch.randn(2, 8, requires_grad=True)
    out = bridge.fuse(x, enriched, suffix)
    torch.testing.assert_close(out, x)  # a fresh model with the stack is the plain model
    out.square().sum().backward()  # and its zero layers learn from the first step
    assert bridge.unembed.weight.grad.abs().sum() > 0
    assert bridge.film.weight.grad.abs().sum() > 0
