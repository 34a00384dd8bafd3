"""Synthetic checkpoints in the authors' CodeFormer3D layout (fixture README Sec. 4).

`fill(keys, seed)` builds the state dict of `keys.json` by the fill recipe v1, for any seed;
`small_layout(...)` is the same layout at toy sizes (as the authors' constructor would name
and shape it), so importer, enhance and fine-tune tests run on CPU in seconds.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors_bfvr"


def fixture_dir() -> Path:
    import os

    return Path(os.environ.get("STC_AUTHORS_FIXTURE", FIXTURE))


def fill_rule(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(scale c, offset) of the recipe's first matching rule R1..R6."""
    if name in ("position_emb_s", "position_emb_t"):
        return 0.5, 0.0                                             # R1
    if name in ("quantize.embedding_s.weight", "quantize.embedding_t.weight"):
        return 1.0, 0.0                                             # R2
    if len(shape) == 1 and name.endswith("weight"):
        return 0.1, 1.0                                             # R3
    if name.endswith("bias"):
        return 0.05, 0.0                                            # R4
    fan_in = math.prod(shape[1:])
    if "_ft_layers." in name and (name.endswith("self_attn.out_proj.weight")
                                  or name.endswith("linear2.weight")):
        return 0.1 / math.sqrt(fan_in), 0.0                         # R5
    return 1.0 / math.sqrt(fan_in), 0.0                             # R6


def fill_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")) + seed)
    r = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    c, offset = fill_rule(name, tuple(shape))
    v = r * c
    return v + offset if offset else v


def fill(layout: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, torch.Tensor]:
    return {name: fill_tensor(name, shape, seed) for name, shape in layout}


def fixture_layout() -> list[tuple[str, tuple[int, ...]]]:
    keys = json.loads((fixture_dir() / "keys.json").read_text())["keys"]
    return [(k["name"], tuple(k["shape"])) for k in keys]


def save_release(state: dict[str, torch.Tensor], path: Path) -> Path:
    """As the release is saved: a dict with the weights under "params_ema"."""
    torch.save({"params_ema": state}, path)
    return path


# ------------------------------------------------------------------ a toy-size layout
def _res(p: str, cin: int, cout: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [(f"{p}.norm1.weight", (cin,)), (f"{p}.norm1.bias", (cin,)),
           (f"{p}.conv1.weight", (cout, cin, 3, 3, 3)), (f"{p}.conv1.bias", (cout,)),
           (f"{p}.norm2.weight", (cout,)), (f"{p}.norm2.bias", (cout,)),
           (f"{p}.conv2.weight", (cout, cout, 3, 3, 3)), (f"{p}.conv2.bias", (cout,))]
    if cin != cout:
        out += [(f"{p}.conv_out.weight", (cout, cin, 1, 1, 1)), (f"{p}.conv_out.bias", (cout,))]
    return out


def _attn(p: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [(f"{p}.norm.weight", (c,)), (f"{p}.norm.bias", (c,))]
    for n in ("q", "k", "v", "proj_out"):
        out += [(f"{p}.{n}.weight", (c, c, 1, 1, 1)), (f"{p}.{n}.bias", (c,))]
    return out


def small_layout(nf: int = 8, ch_mult=(1, 2, 4, 8), emb: int = 32, codes: int = 64,
                 layers: int = 9, grid: int = 4, mlp: int = 64,
                 unused: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of CodeFormer3D at toy sizes, in the authors' state_dict() order:
    VQAutoEncoder3D(nf, ch_mult, res_blocks=2, attn_resolutions=[32]) plus the Stage II
    parts for a grid x grid latent (input 8 * grid square)."""
    L: list[tuple[str, tuple[int, ...]]] = [("position_emb_s", (grid * grid, emb)),
                                            ("position_emb_t", (grid * grid, emb))]
    n = len(ch_mult)
    # encoder
    i, ch = 0, nf
    L += [(f"encoder.blocks.0.weight", (nf, 3, 3, 3, 3)), ("encoder.blocks.0.bias", (nf,))]
    i = 1
    for level, m in enumerate(ch_mult):
        out = nf * m
        for _ in range(2):
            L += _res(f"encoder.blocks.{i}", ch, out)
            ch, i = out, i + 1
            if level == n - 1:
                L += _attn(f"encoder.blocks.{i}", ch)
                i += 1
        if level != n - 1:
            kt = 3 if level == 0 else 1
            L += [(f"encoder.blocks.{i}.conv.weight", (ch, ch, kt, 3, 3)),
                  (f"encoder.blocks.{i}.conv.bias", (ch,))]
            i += 1
    L += _res(f"encoder.blocks.{i}", ch, ch) + _attn(f"encoder.blocks.{i + 1}", ch)
    L += _res(f"encoder.blocks.{i + 2}", ch, ch)
    L += [(f"encoder.blocks.{i + 3}.weight", (ch,)), (f"encoder.blocks.{i + 3}.bias", (ch,)),
          (f"encoder.blocks.{i + 4}.weight", (emb, ch, 3, 3, 3)),
          (f"encoder.blocks.{i + 4}.bias", (emb,))]
    # quantizer
    L += [("quantize.embedding_s.weight", (codes, emb)), ("quantize.embedding_t.weight", (codes, emb))]
    L += _attn("quantize.SA", emb)
    # generator
    ch = nf * ch_mult[-1]
    L += [("generator.blocks.0.weight", (ch, emb, 3, 3, 3)), ("generator.blocks.0.bias", (ch,))]
    L += _res("generator.blocks.1", ch, ch) + _attn("generator.blocks.2", ch)
    L += _res("generator.blocks.3", ch, ch)
    i = 4
    for level in reversed(range(n)):
        out = nf * ch_mult[level]
        for _ in range(2):
            L += _res(f"generator.blocks.{i}", ch, out)
            ch, i = out, i + 1
            if level >= n - 2:
                L += _attn(f"generator.blocks.{i}", ch)
                i += 1
        if level != n - 1:
            L += [(f"generator.blocks.{i}.conv.weight", (ch, ch, 3, 3, 3)),
                  (f"generator.blocks.{i}.conv.bias", (ch,))]
            i += 1
    L += [(f"generator.blocks.{i}.weight", (ch,)), (f"generator.blocks.{i}.bias", (ch,)),
          (f"generator.blocks.{i + 1}.weight", (3, ch, 3, 3, 3)),
          (f"generator.blocks.{i + 1}.bias", (3,))]
    if unused:
        L += [(f"{b}_feat_emb.weight", (emb, emb)) for b in "st"]
        L += [(f"{b}_feat_emb.bias", (emb,)) for b in "st"]
    for b in "st":
        for j in range(layers):
            p = f"{b}_ft_layers.{j}"
            L += [(f"{p}.self_attn.in_proj_weight", (3 * emb, emb)),
                  (f"{p}.self_attn.in_proj_bias", (3 * emb,)),
                  (f"{p}.self_attn.out_proj.weight", (emb, emb)),
                  (f"{p}.self_attn.out_proj.bias", (emb,)),
                  (f"{p}.linear1.weight", (mlp, emb)), (f"{p}.linear1.bias", (mlp,)),
                  (f"{p}.linear2.weight", (emb, mlp)), (f"{p}.linear2.bias", (emb,)),
                  (f"{p}.norm1.weight", (emb,)), (f"{p}.norm1.bias", (emb,)),
                  (f"{p}.norm2.weight", (emb,)), (f"{p}.norm2.bias", (emb,))]
    for b in "st":
        L += [(f"{b}_idx_pred_layer.0.weight", (emb,)), (f"{b}_idx_pred_layer.0.bias", (emb,)),
              (f"{b}_idx_pred_layer.1.weight", (codes, emb))]
    if unused:
        L += [("fuse_convs_dict.32.scale.0.weight", (emb, emb, 3, 3)),
              ("fuse_convs_dict.32.scale.0.bias", (emb,))]
    return L


def small_checkpoint(path: Path, seed: int = 0, **sizes) -> Path:
    return save_release(fill(small_layout(**sizes), seed), path)
