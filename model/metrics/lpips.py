"""LPIPS (Zhang et al. 2018, version 0.1) without the `lpips` package or torchvision.

The network is the `lpips` package's: an ImageNet AlexNet or VGG16 trunk, features taken
after five ReLUs, unit-normalised over channels, squared differences weighted by five
1x1 linear layers, averaged over space and summed. Weights must be local files in one of
the layouts the `lpips` package and torchvision use:

- a full `lpips.LPIPS(net=...).state_dict()`: keys `net.slice{1-5}.N.weight|bias` plus
  `lin{0-4}.model.1.weight` (or `.model.0.` when saved without dropout); or
- the linear layers only (`lpips/weights/v0.1/alex.pth` or `vgg.pth` from the package)
  together with the trunk as torchvision saves it (`alexnet-owt-7be5be79.pth`,
  `vgg16-397923af.pth`: keys `features.N.weight|bias`), given as `lpips_backbone`, or
  both merged into one file.

The trunk (alex or vgg) is recognised from the first convolution's shape. Inputs are RGB
in [-1, 1]; the scaling layer's constants are the package's. The port is checked against
the reference `lpips` package (0.1.4) on fixed inputs and seeded random weights, recorded in
tests/fixtures/lpips_reference/ (test_eval_paper_metrics.py).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn as nn

from stc.core.config import ConfigError
from stc.core.tensors import image_to_tensor
from stc.model.metrics.weights import load_state_dict

HINT = ("Give the lpips package's full state dict, or its v0.1 linear-layer file (alex.pth/vgg.pth) "
        "with --lpips-backbone pointing at torchvision's alexnet/vgg16 weights.")

# torchvision layouts: conv (out_channels, kernel, stride, padding) or "M" (max-pool 3/2 for
# alexnet, 2/2 for vgg) or "R" (ReLU), in `features` index order; taps = ReLUs LPIPS reads.
NETS = {
    "alex": dict(layers=[(64, 11, 4, 2), "R", "M", (192, 5, 1, 2), "R", "M", (384, 3, 1, 1), "R",
                         (256, 3, 1, 1), "R", (256, 3, 1, 1), "R"],
                 pool=(3, 2), taps=(1, 4, 7, 9, 11), first_kernel=11),
    "vgg": dict(layers=[(64, 3, 1, 1), "R", (64, 3, 1, 1), "R", "M",
                        (128, 3, 1, 1), "R", (128, 3, 1, 1), "R", "M",
                        (256, 3, 1, 1), "R", (256, 3, 1, 1), "R", (256, 3, 1, 1), "R", "M",
                        (512, 3, 1, 1), "R", (512, 3, 1, 1), "R", (512, 3, 1, 1), "R", "M",
                        (512, 3, 1, 1), "R", (512, 3, 1, 1), "R", (512, 3, 1, 1), "R"],
                pool=(2, 2), taps=(3, 8, 15, 22, 29), first_kernel=3),
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    def __init__(self, net: str = "alex"):
        super().__init__()
        spec = NETS[net]
        self.net_name = net
        layers: list[nn.Module] = []
        ch, widths = 3, []
        for i, v in enumerate(spec["layers"]):
            if v == "R":
                layers.append(nn.ReLU(inplace=False))
                if i in spec["taps"]:
                    widths.append(ch)
            elif v == "M":
                layers.append(nn.MaxPool2d(*spec["pool"]))
            else:
                out, k, s, p = v
                layers.append(nn.Conv2d(ch, out, k, s, p))
                ch = out
        self.taps = spec["taps"]
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image of two batches [N, 3, H, W] in [-1, 1] -> [N]."""
        x = torch.cat([a, b]).sub(self.shift).div(self.scale)
        total = a.new_zeros(a.shape[0])
        k = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                f = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fa, fb = f.chunk(2)
                total = total + self.lins[k]((fa - fb) ** 2).mean(dim=(1, 2, 3))
                k += 1
        return total

    @torch.inference_mode()
    def distance(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """LPIPS of two RGB uint8 frames [H, W, 3]."""
        def t(x: np.ndarray) -> torch.Tensor:
            return image_to_tensor(x)

        return float(self(t(pred), t(gt))[0])


_SLICE = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")
_FEAT = re.compile(r"^(?:module\.)?features\.(\d+)\.(weight|bias)$")
_LIN = re.compile(r"^lin(\d)\.model\.[01]\.weight$")


def _convert(state: dict, where: str) -> dict[str, torch.Tensor]:
    """Our key layout from any of the accepted ones."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _SLICE.match(key) or _FEAT.match(key)
        if m:
            out[f"features.{m.group(1)}.{m.group(2)}"] = value
        elif (m := _LIN.match(key)):
            out[f"lins.{m.group(1)}.weight"] = value
    if not out:
        raise ConfigError(f"{where} has no LPIPS or alexnet/vgg16 keys (saw e.g. {list(state)[:3]}). {HINT}")
    return out


def load_lpips(weights: str, backbone: str | None = None) -> LPIPS:
    """LPIPS with every parameter from the given files (ConfigError if any is missing)."""
    state = _convert(load_state_dict(weights, "LPIPS", HINT), weights)
    if backbone:
        state = {**_convert(load_state_dict(backbone, "LPIPS backbone", HINT), backbone), **state}
    first = state.get("features.0.weight")
    if first is None:
        raise ConfigError(f"LPIPS weights {weights} hold no backbone (features) weights. {HINT}")
    net = next((n for n, s in NETS.items() if first.shape[-1] == s["first_kernel"]), None)
    if net is None:
        raise ConfigError(f"LPIPS weights {weights}: first convolution {tuple(first.shape)} is neither "
                          f"alexnet's nor vgg16's. {HINT}")
    model = LPIPS(net)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise ConfigError(f"LPIPS weights ({net}) lack {missing[:4]}{'...' if len(missing) > 4 else ''}. {HINT}")
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise ConfigError(f"LPIPS weights ({net}): {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                          f"expected {tuple(expected[bad[0]].shape)}. {HINT}")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval().requires_grad_(False)
