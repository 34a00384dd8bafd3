"""Loading the pretrained critics: VGG19 from a torchvision-format file and DINOv2 through
`transformers`, both exercised on tiny randomly initialised models saved locally."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stc.core.config import ConfigError
from stc.model.stage1.discriminator import DinoDiscriminator
from stc.model.stage1.losses import adaptive_weight, generator_adv_loss, hinge_d_loss
from stc.model.stage1.perceptual import PerceptualLoss, VGG19Features, load_vgg19_features


def save_vgg19(folder: Path, fmt: str = "pth") -> Path:
    """Random VGG19 features in torchvision's layout (features.N.*, plus classifier keys as
    in the real vgg19-dcbb9e9d.pth)."""
    torch.manual_seed(0)
    state = VGG19Features().state_dict()
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = folder / f"vgg19.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def save_tiny_dinov2(folder: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, patch_size=14, image_size=28)
    path = folder / "dinov2-tiny"
    Dinov2Model(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_vgg19_loads_from_a_torchvision_format_file(tmp_path, fmt):
    path = save_vgg19(tmp_path, fmt)
    net = load_vgg19_features(str(path), upto="relu2_2")
    assert net.names[-1] == "relu2_2" and len(net.features) == 9
    saved = torch.load(path) if fmt == "pth" else None
    if saved is not None:
        assert torch.equal(net.features[0].weight, saved["features.0.weight"])

    loss_fn = PerceptualLoss.from_weights(str(path), {"relu1_2": 0.5, "relu2_2": 1.0}, max_frames=2)
    target = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    pred = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    loss = loss_fn(pred, target)
    assert float(loss_fn(target, target)) == 0.0 and float(loss.detach()) > 0
    loss.backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.vgg.parameters())


def test_vgg19_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_vgg19_features(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable state dict"):
        load_vgg19_features(str(junk))
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="torchvision's key layout"):
        load_vgg19_features(str(tmp_path / "other.pth"))


def test_dinov2_discriminator_loads_and_trains_only_its_heads(tmp_path):
    disc = DinoDiscriminator.from_pretrained(str(save_tiny_dinov2(tmp_path)), layers=(1, 2),
                                             head_channels=8, image_size=28, max_frames=2)
    assert disc.backbone.config.hidden_size == 32 and not disc.backbone.training
    real = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    fake = (torch.rand(1, 3, 4, 32, 32) * 2 - 1).requires_grad_(True)
    logits = disc(fake)
    assert logits.shape[0] == 2                   # one row per sampled frame
    g = generator_adv_loss(logits)
    g.backward()
    assert fake.grad.abs().sum() > 0               # gradient flows through the frozen backbone
    assert all(p.grad is None for p in disc.backbone.parameters())
    d = hinge_d_loss(disc(real), disc(fake.detach()))
    assert torch.isfinite(d)

    with pytest.raises(ConfigError, match="outside"):
        DinoDiscriminator.from_pretrained(str(tmp_path / "dinov2-tiny"), layers=(5,))
    with pytest.raises(ConfigError, match="DINOv2"):
        DinoDiscriminator.from_pretrained(str(tmp_path / "nowhere"), layers=(1,))


def test_adaptive_weight_balances_gradient_norms():
    last = torch.nn.Parameter(torch.randn(4, 4))
    rec = (last * 3.0).sum()
    adv = (last * 0.5).sum()
    w = adaptive_weight(rec, adv, last, max_weight=1e4)
    assert float(w) == pytest.approx(6.0, rel=1e-3)
    assert float(adaptive_weight(rec, adv, last, max_weight=2.0)) == 2.0
