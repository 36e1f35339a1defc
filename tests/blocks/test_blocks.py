import itertools
import math

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
from omnifm.blocks.tokenizer import SpectralStandardize
from omnifm.functional import contrastive_spalign_loss, spalign_loss, spread_floor_loss

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
    tokenizer = SpectralTokenizer(dim=8, low_pass_size=8).double().eval()
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


def test_spectral_statistics_learn_in_training_only_and_survive_bn_recalibration() -> None:
    # Prepare: windows whose every bin is N(3, 2^2), far from the initial (0, 1)
    standardize = SpectralStandardize((4, 4), momentum=0.02)
    # Execute
    for _ in range(200):
        standardize(3 + 2 * torch.randn(64, 4, 4))
    mean, var = standardize.mean.clone(), standardize.var.clone()
    standardize.eval()
    out = standardize(3 + 2 * torch.randn(256, 4, 4))
    # Assert: running statistics near the truth, frozen in eval, output standardised
    torch.testing.assert_close(mean, torch.full((4, 4), 3.0), atol=0.3, rtol=0)
    torch.testing.assert_close(var, torch.full((4, 4), 4.0), atol=0.8, rtol=0)
    assert torch.equal(standardize.mean, mean)
    assert abs(out.mean().item()) < 0.2 and abs(out.std().item() - 1) < 0.2


def test_batch_norm_recalibration_leaves_the_spectral_statistics_alone() -> None:
    from omnifm.tasks import ClassificationTask

    def factory(dim: int) -> OmniFMStack:
        return OmniFMStack(dim, spectral_dim=8, low_pass_size=8, num_layers=1)

    task = ClassificationTask(4, 1, backbone="test_resnet", embed_dim=16, stack=factory)
    before = {k: v.clone() for k, v in task.state_dict().items() if "standardize" in k}
    task.recalibrate_batch_norm([{"image": torch.rand(8, 1, 16, 16)}])
    after = {k: v for k, v in task.state_dict().items() if "standardize" in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)


def test_the_task_loss_sends_gradient_into_the_tokenizer() -> None:
    # Prepare: a filled bank; only the task's outputs (tokens, suffix) in the loss
    bank = bank_for(16)
    for self_context, expected in ((True, True), (False, False)):
        stack = OmniFMStack(32, 16, low_pass_size=8, num_layers=1, self_context=self_context)
        # Execute
        out = stack(torch.rand(4, 1, 16, 16), torch.randn(4, 6, 32), bank)
        (out.tokens.square().mean() + out.suffix.square().mean()).backward()
        # Assert: with s among ECA's keys the tokenizer learns from the task; without it
        # (the paper's ECA on S_g alone) retrieval's top-k cuts the path
        grads = [p.grad for p in stack.tokenizer.parameters()]
        reached = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reached == expected, self_context


def test_collapse_minimises_the_paper_spalign_but_not_the_contrastive_one() -> None:
    # Prepare: a collapsed state (every token and prototype the same vector) and a spread one
    # (each token one of 8 orthogonal prototypes, its own first among the candidates)
    one = torch.nn.functional.normalize(torch.ones(8), dim=0)
    collapsed_s, collapsed_bank = one.expand(8, 8), one.expand(8, 8, 8)
    spread_s = torch.eye(8)
    order = torch.stack([torch.roll(torch.arange(8), -i) for i in range(8)])
    spread_bank = torch.eye(8)[order]  # (8 queries, 8 candidates sorted: own first)
    # Execute
    paper = spalign_loss(collapsed_s, collapsed_bank[:, :2])
    contrastive_collapsed = contrastive_spalign_loss(collapsed_s, collapsed_bank, 2)
    contrastive_spread = contrastive_spalign_loss(spread_s, spread_bank, 2)
    # Assert: collapse is the paper form's global minimum (0); for the contrastive form it
    # is log(n / positives), worse than the spread state
    assert paper.item() == 0.0
    torch.testing.assert_close(contrastive_collapsed, torch.tensor(math.log(8 / 2)))
    assert contrastive_spread.item() < contrastive_collapsed.item() - 0.5


def test_the_spread_floor_pushes_collapsed_tokens_apart_where_infonce_has_no_gradient() -> None:
    # Prepare: collapsed tokens (a little noise, as a network's outputs have) and a bank
    one = torch.nn.functional.normalize(torch.ones(8), dim=0)
    noise = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    s = (one + 1e-3 * noise).requires_grad_()
    bank = one.expand(16, 12, 8)
    # Execute
    infonce = contrastive_spalign_loss(s, bank, 4)
    (grad_infonce,) = torch.autograd.grad(infonce, s)
    floor = spread_floor_loss(s, 0.5)
    (grad_floor,) = torch.autograd.grad(floor, s)
    # Assert: InfoNCE is flat there; the floor is not, and its step spreads the tokens
    assert grad_infonce.abs().max() < 1e-6
    assert floor.item() > 0.8 and grad_floor.norm() > 0.02  # ~0.05 whatever the noise
    spread = (s - 0.1 * grad_floor).detach()
    assert spread.var(dim=0).sum() > s.detach().var(dim=0).sum()
    assert spread_floor_loss(torch.eye(8), 0.5).item() == 0.0  # well spread: no pull
