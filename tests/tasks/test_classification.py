from types import SimpleNamespace

import pytest
import torch

from omnifm.bank import SpectralBank
from omnifm.tasks import ClassificationTask


def batch(n: int = 8, classes: int = 3, channels: int = 1) -> dict:
    return {"image": torch.rand(n, channels, 16, 16), "label": torch.randint(0, classes, (n,))}


@pytest.mark.parametrize("task_type", ["multi-class", "binary", "multi-label"])
def test_losses_and_metrics_for_each_task_type(task_type: str) -> None:
    classes = 2 if task_type == "binary" else 3
    model = ClassificationTask(classes, 1, task_type, backbone="test_resnet", embed_dim=16)
    b = batch(classes=classes)
    if task_type == "multi-label":
        b["label"] = torch.randint(0, 2, (8, classes))
    preds, _ = model(b)
    assert preds.shape == (8, classes)
    loss = model.task_loss(preds, b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.update_metrics(model.val_metrics, preds, b)
    values = model.val_metrics.compute()
    assert set(values) == {"val/acc", "val/f1", "val/auroc"}


def test_binary_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="num_classes=2"):
        ClassificationTask(3, 1, "binary", backbone="test_resnet")


def test_plain_baseline_has_no_stack_and_a_bank_is_used_when_given() -> None:
    plain = ClassificationTask(3, 1, backbone="test_resnet", embed_dim=16, stack=None)
    assert plain.stack is None and plain.parameter_groups()["personal"] == set()
    full = ClassificationTask(3, 1, backbone="test_resnet", embed_dim=16)
    bank = SpectralBank(128)
    bank.update("a", "ct", torch.randn(4, 128), round=0)
    _, out = full(batch(), bank)
    assert out.hit_ids.shape == (8, 4)
    assert full(batch())[1].hit_ids.shape == (8, 0)  # no bank, no retrieval


def test_batch_norm_recalibration_gives_the_data_statistics() -> None:
    # Prepare: stale running statistics
    model = ClassificationTask(3, 1, backbone="test_resnet", embed_dim=16, stack=None)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(5.0)
    batches = [batch() for _ in range(3)]
    # Execute
    model.eval()
    model.recalibrate_batch_norm(batches)
    # Assert: the cumulative mean over the batches of the layer's input batch means
    inputs = []
    hook = bn.register_forward_hook(lambda m, args, out: inputs.append(args[0].mean((0, 2, 3))))
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    hook.remove()
    torch.testing.assert_close(bn.running_mean, torch.stack(inputs).mean(0), atol=1e-3, rtol=0)
    assert bn.momentum == 0.1


def test_recalibration_reads_at_most_recalibrate_batches_of_the_training_data() -> None:
    # Prepare: 5 training batches of 4 images; the task records what recalibration reads
    data = [{"image": torch.rand(1, 16, 16), "label": torch.tensor(0)} for _ in range(20)]
    train = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    datamodule = SimpleNamespace(train_dataloader=lambda: train)
    seen: dict[int | None, int] = {}
    for limit in (2, None):
        model = ClassificationTask(
            3, 1, backbone="test_resnet", embed_dim=16, recalibrate_batches=limit
        )
        model._trainer = SimpleNamespace(datamodule=datamodule)
        model.recalibrate_batch_norm = lambda loader, limit=limit: seen.update(
            {limit: len(list(loader))}
        )
        # Execute
        model._recalibrate_on_train_data()
    # Assert
    assert seen == {2: 2, None: 5}
    with pytest.raises(ValueError, match="recalibrate_batches"):
        ClassificationTask(3, 1, backbone="test_resnet", recalibrate_batches=0)


def test_volumes_are_classified_with_a_3d_encoder_and_stack() -> None:
    # Prepare: a thin MONAI ResNet-10 and a stack reading the 3D spectrum
    from functools import partial

    from omnifm.blocks import OmniFMStack

    stack = partial(OmniFMStack, spectral_dim=8, low_pass_size=4, spatial_dims=3, num_layers=1)
    model = ClassificationTask(
        2, 1, "binary", backbone="resnet10", spatial_dims=3, width=0.125, embed_dim=16, stack=stack
    )
    volumes = {"image": torch.rand(2, 1, 28, 28, 28), "label": torch.tensor([0, 1])}
    # Execute
    preds, _ = model(volumes)
    model.task_loss(preds, volumes).backward()
    # Assert: logits, one spectral token per volume, gradients into the 3D encoder
    assert preds.shape == (2, 2) and model.spectral_tokens(volumes).shape == (2, 8)
    assert model.encoder.backbone[0].weight.grad is not None
    with pytest.raises(ValueError, match=r"classifies volumes .* shape \(2, 1, 8, 8\)"):
        model({"image": torch.rand(2, 1, 8, 8), "label": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match=r"stack's spatial_dims \(2\) must equal the task's \(3\)"):
        ClassificationTask(2, 1, "binary", backbone="resnet10", spatial_dims=3, stack=OmniFMStack)
    with pytest.raises(ValueError, match="unknown 3D backbone 'test_resnet'"):
        ClassificationTask(2, 1, "binary", backbone="test_resnet", spatial_dims=3, stack=None)
