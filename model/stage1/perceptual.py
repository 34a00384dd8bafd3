"""Perceptual loss on VGG19 features, without torchvision.

`VGG19Features.features` reproduces torchvision's `vgg19().features` layer for layer, so
the state-dict keys are the same (`features.0.weight`, ..., `features.34.bias`) and a
torchvision checkpoint such as `vgg19-dcbb9e9d.pth` loads as it is. Weights come from a
local file, an http(s) URL (through torch hub's cache), or `hf://REPO/FILE` on the Hugging
Face hub; nothing is fetched unless the config names it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.core.config import ConfigError

# torchvision's configuration "E": channels per conv, "M" for max-pooling.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_layer_names() -> list[str]:
    """Names of the modules of `features`, in order: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for v in VGG19_LAYOUT:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


class VGG19Features(nn.Module):
    def __init__(self, upto: str | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                ch = v
        names = vgg19_layer_names()
        if upto is not None:
            layers = layers[:names.index(upto) + 1]
        self.names = names[:len(layers)]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in zip(self.names, self.features):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out


def _fetch(weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights).expanduser()
    hint = ("give a local path with `perceptual.weights: /path/vgg19-dcbb9e9d.pth` "
            "(torchvision's VGG19 file) or --vgg")
    if path.is_file():
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise ConfigError(f"VGG19 weights {path} are not a readable state dict "
                              f"({type(exc).__name__}: {exc}); {hint}") from None
    try:
        if weights.startswith(("http://", "https://")):
            return torch.hub.load_state_dict_from_url(weights, map_location="cpu",
                                                      weights_only=True, progress=False)
        if weights.startswith("hf://"):
            from huggingface_hub import hf_hub_download

            repo, _, filename = weights[len("hf://"):].rpartition("/")
            return torch.load(hf_hub_download(repo, filename), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - network, cache, or format: same advice
        raise ConfigError(f"cannot load VGG19 weights {weights!r} ({type(exc).__name__}: "
                          f"{exc}); offline? {hint}") from None
    raise ConfigError(f"VGG19 weights {weights!r} not found: not a file, URL or hf:// id; {hint}")


def load_vgg19_features(weights: str, upto: str | None = None) -> VGG19Features:
    """VGG19 `features` (up to layer `upto`) with weights from a torchvision-format file."""
    state = _fetch(weights)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net = VGG19Features(upto)
    wanted = net.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ConfigError(f"VGG19 weights {weights!r} lack {missing[:3]}...: expected "
                          "torchvision's key layout (features.N.weight)")
    net.load_state_dict({k: state[k] for k in wanted})
    return net


def frames_of(video: torch.Tensor, max_frames: int | None) -> torch.Tensor:
    """[B, C, T, H, W] -> [B * T', C, H, W], T' evenly spaced frames (all when None)."""
    t = video.shape[2]
    if max_frames is not None and max_frames < t:
        idx = torch.linspace(0, t - 1, max_frames, device=video.device).round().long()
        video = video.index_select(2, idx)
    return video.transpose(1, 2).flatten(0, 1)


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 activations of two videos in [-1, 1]; VGG is frozen."""

    def __init__(self, features: VGG19Features, layer_weights: dict[str, float],
                 max_frames: int | None = None):
        super().__init__()
        unknown = sorted(set(layer_weights) - set(vgg19_layer_names()))
        if unknown:
            raise ConfigError(f"perceptual.layers: unknown VGG19 layer(s) {unknown}")
        self.vgg = features.eval().requires_grad_(False)
        self.layer_weights = dict(layer_weights)
        self.max_frames = max_frames
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.vgg.eval()
        return self

    @classmethod
    def from_weights(cls, weights: str, layer_weights: dict[str, float],
                     max_frames: int | None = None) -> "PerceptualLoss":
        names = vgg19_layer_names()
        deepest = max(layer_weights, key=names.index)
        return cls(load_vgg19_features(weights, upto=deepest), layer_weights, max_frames)

    def _norm(self, video: torch.Tensor) -> torch.Tensor:
        x = (frames_of(video, self.max_frames) + 1) / 2
        return (x - self.mean) / self.std

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        wanted = set(self.layer_weights)
        fp = self.vgg(self._norm(pred), wanted)
        with torch.no_grad():
            ft = self.vgg(self._norm(target), wanted)
        loss = pred.new_zeros(())
        for name, w in self.layer_weights.items():
            loss = loss + w * F.l1_loss(fp[name].float(), ft[name].float())
        return loss
