"""The authors' released BFVR-STC checkpoints in stc's own network.

The paper's code (Dixin-Lab/BFVR-STC) releases three Stage II checkpoints, `ckpt-bfvr.pth`
(`CodeFormer3D(n_head=2, n_layers=9)`), `ckpt-defilcker.pth` and `ckpt-deflickersd.pth`
(`n_head=4, n_layers=6`), each a dict whose "params_ema" entry is the state dict. This module
reads such a file without unpickling anything but tensors (`torch.load(weights_only=True)`),
infers every size from the tensor shapes (so a small checkpoint in the same layout loads as
well as the released one), maps the authors' names onto stc's `Stage2Model` configured by
the authors' presets (`stage1`, `stage2`, `stage2-deflicker`) and loads it strictly.

    model = load_authors_checkpoint("ckpt-bfvr.pth")            # eval mode, CPU
    out, logits_s, logits_t, lq_feat = authors_forward(model, x)  # x [B, 3, T, 512, 512] in [0, 1]

`authors_forward` is the authors' forward call as `scripts/infer_bfvr.py` makes it; stc's
own `Stage2Model.restore` runs the same network in stc's [-1, 1] convention.
`authors_preprocess` / `authors_postprocess` are that script's frame handling, for
comparing with the authors' published outputs (`stc enhance --aligned --preset authors`).

Entries the authors' forward never uses (`s_feat_emb`, `t_feat_emb`, `fuse_convs_dict`: the
SFT fusion of CodeFormer, which CodeFormer3D builds but does not call) are reported and
dropped. The release holds no Stage I HQ encoder (it lives in the unreleased
`net_g_stage1.pth`), so the frozen `vqgan.encoder` that makes Stage II targets starts as a
copy of the released LQ encoder, and `stc train stage2 --init` makes its targets with that
frozen copy (stc.model.stage2.finetune).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from stc.core.config import ConfigError, from_dict, to_dict
from stc.model.stage1.config import ModelConfig, load_stage1_config
from stc.model.stage2.config import Stage2Config, load_stage2_config
from stc.model.restore.aligned import (  # noqa: F401  (their frame handling, re-exported)
    AUTHORS_FRAMES,
    authors_postprocess,
    authors_preprocess,
)
from stc.model.stage2.model import Stage2Model

CHECKPOINT_KEY = "params_ema"
UNUSED_PREFIXES = ("s_feat_emb.", "t_feat_emb.", "fuse_convs_dict.")


@dataclass(frozen=True)
class Variant:
    name: str
    release: str        # the file name the authors' script downloads
    preset: str         # stc's Stage II preset with the matching training settings
    heads: int          # n_head changes no shape, so it comes from the variant
    layers: int


VARIANTS = {
    "bfvr": Variant("bfvr", "ckpt-bfvr.pth", "stage2", 2, 9),
    "deflicker": Variant("deflicker", "ckpt-defilcker.pth", "stage2-deflicker", 4, 6),
    "deflickersd": Variant("deflickersd", "ckpt-deflickersd.pth", "stage2-deflickersd", 4, 6),
}


class AuthorsCheckpointError(ConfigError):
    """A file that is not a loadable checkpoint in the authors' layout."""


@dataclass
class Imported:
    model: Stage2Model
    variant: Variant
    dropped: list[str] = field(default_factory=list)     # unused entries, not carried over
    dropped_params: int = 0


# ------------------------------------------------------------------ reading the file
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The "params_ema" state dict of an authors' .pth, read with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AuthorsCheckpointError(
            f"{path}: refused: its pickle asks for more than tensors and plain containers "
            f"(weights_only load failed: {first[:300]}). stc never runs code from a "
            "checkpoint; the authors' release holds only tensors, so this file is not it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AuthorsCheckpointError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
            f"({type(exc).__name__}: {str(exc)[:200]}); download it again") from None
    if not isinstance(obj, dict):
        raise AuthorsCheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict with "
                                     f"a {CHECKPOINT_KEY!r} entry (the authors' release layout)")
    if CHECKPOINT_KEY not in obj:
        keys = ", ".join(map(str, list(obj)[:5])) or "none"
        raise AuthorsCheckpointError(
            f"{path}: no {CHECKPOINT_KEY!r} entry (top-level keys: {keys}); the authors' "
            "released checkpoints keep the EMA generator there")
    state = obj[CHECKPOINT_KEY]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AuthorsCheckpointError(f"{path}: {CHECKPOINT_KEY!r} is not a dict of tensors")
    return state


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ names
_PACKED = ("q", "k", "v")


def _block_rest(rest: str) -> list[str]:
    """stc's names inside an encoder/decoder/SA block -> the authors' (qkv -> q, k, v)."""
    m = re.fullmatch(r"qkv\.(weight|bias)", rest)
    if m:
        return [f"{p}.{m.group(1)}" for p in _PACKED]
    rest = re.sub(r"^skip\.", "conv_out.", rest)
    return [re.sub(r"^proj\.", "proj_out.", rest)]


def authors_names(stc_key: str, decoder_blocks: int) -> list[str]:
    """The authors' name(s) of one entry of stc's Stage2Model (three for a packed q/k/v);
    [] for the frozen HQ encoder copy, which the release does not hold."""
    if stc_key.startswith("vqgan.encoder."):
        return []
    m = re.fullmatch(r"lq_encoder\.blocks\.(\d+)\.?(.*)", stc_key)
    if m:
        i, rest = m.groups()
        return [f"encoder.blocks.{i}" + (f".{r}" if r else "") for r in
                (_block_rest(rest) if rest.count(".") else [rest])]
    m = re.fullmatch(r"vqgan\.decoder\.blocks\.(\d+)\.?(.*)", stc_key)
    if m:
        i, rest = m.groups()
        return [f"generator.blocks.{i}" + (f".{r}" if r else "") for r in
                (_block_rest(rest) if rest.count(".") else [rest])]
    m = re.fullmatch(r"vqgan\.decoder\.conv_out\.(weight|bias)", stc_key)
    if m:
        return [f"generator.blocks.{decoder_blocks}.{m.group(1)}"]
    m = re.fullmatch(r"vqgan\.quantizer\.codebook_([st])\.weight", stc_key)
    if m:
        return [f"quantize.embedding_{m.group(1)}.weight"]
    m = re.fullmatch(r"vqgan\.quantizer\.temporal_attention\.(.*)", stc_key)
    if m:
        return [f"quantize.SA.{r}" for r in _block_rest(m.group(1))]
    m = re.fullmatch(r"transformer_([st])\.(.*)", stc_key)
    if m:
        b, rest = m.groups()
        if rest == "pos":
            return [f"position_emb_{b}"]
        if rest.startswith("layers."):
            return [f"{b}_ft_layers." + rest[len("layers."):]]
        if rest.startswith("norm."):
            return [f"{b}_idx_pred_layer.0." + rest[len("norm."):]]
        if rest == "head.weight":
            return [f"{b}_idx_pred_layer.1.weight"]
    raise KeyError(f"stc entry {stc_key!r} has no counterpart in the authors' layout")


def _rest_is_plain(rest: str) -> bool:
    return "." not in rest


def expected_layout(model: Stage2Model) -> dict[str, tuple[int, ...]]:
    """The authors' names and shapes a checkpoint for `model` must hold (used entries only)."""
    n_dec = len(model.vqgan.decoder.blocks)
    out: dict[str, tuple[int, ...]] = {}
    for k, v in model.state_dict().items():
        names = authors_names(k, n_dec)
        for name in names:
            shape = list(v.shape)
            if len(names) == 3:
                shape[0] //= 3
            out[name] = tuple(shape)
    return out


def to_stc_state(state: dict[str, torch.Tensor], model: Stage2Model) -> dict[str, torch.Tensor]:
    """The authors' tensors under stc's names (q, k, v packed; the LQ encoder also copied into
    the frozen HQ encoder slot)."""
    n_dec = len(model.vqgan.decoder.blocks)
    out = {}
    for k in model.state_dict():
        src = k.replace("vqgan.encoder.", "lq_encoder.", 1) if k.startswith("vqgan.encoder.") else k
        names = authors_names(src, n_dec)
        parts = [state[n].float() for n in names]
        out[k] = (torch.cat(parts, 0) if len(parts) > 1 else parts[0]).clone()
    return out


# ------------------------------------------------------------------ sizes from shapes
def _blocks(state: dict[str, torch.Tensor], prefix: str) -> dict[int, dict[str, torch.Tensor]]:
    found: dict[int, dict[str, torch.Tensor]] = {}
    pat = re.compile(re.escape(prefix) + r"(\d+)\.(.+)")
    for k, v in state.items():
        m = pat.fullmatch(k)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return found


def _need(state: dict[str, torch.Tensor], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise AuthorsCheckpointError(
            f"not the authors' CodeFormer3D layout: missing {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + f"; it has e.g. {', '.join(list(state)[:5])}")


def infer_stage1(state: dict[str, torch.Tensor]) -> ModelConfig:
    """Stage I sizes from the encoder's and codebooks' shapes, on the `stage1` preset (the
    authors' VQAutoEncoder3D wiring)."""
    _need(state, "encoder.blocks.0.weight", "quantize.embedding_s.weight",
          "quantize.embedding_t.weight")
    blocks = _blocks(state, "encoder.blocks.")
    order = sorted(blocks)
    if order != list(range(len(order))) or len(order) < 7:
        raise AuthorsCheckpointError(f"encoder.blocks: indices {order[:8]}... are not 0..N-1 "
                                     "with the mid-block and output layers")
    kinds = []
    for i in order:
        b = blocks[i]
        kinds.append("res" if "norm1.weight" in b else "attn" if "q.weight" in b
                     else "down" if "conv.weight" in b
                     else "norm" if b.get("weight") is not None and b["weight"].ndim == 1
                     else "conv")
    tail = ["res", "attn", "res", "norm", "conv"]
    if kinds[0] != "conv" or kinds[-5:] != tail:
        raise AuthorsCheckpointError(f"encoder.blocks: layer kinds {kinds} do not end in the "
                                     f"authors' mid-block and output {tail}")
    nf = int(blocks[0]["weight"].shape[0])
    levels: list[list[int]] = [[]]
    for i, kind in enumerate(kinds[1:-5], 1):
        if kind == "down":
            levels.append([])
        else:
            levels[-1].append(i)
    res_counts = {sum(kinds[i] == "res" for i in lv) for lv in levels}
    if len(res_counts) != 1:
        raise AuthorsCheckpointError(f"encoder.blocks: residual blocks per level differ {res_counts}")
    mult, attn = [], []
    for level, idx in enumerate(levels):
        res = [i for i in idx if kinds[i] == "res"]
        ch = int(blocks[res[-1]]["conv2.weight"].shape[0])
        if ch % nf:
            raise AuthorsCheckpointError(f"encoder level {level}: {ch} channels, not a multiple of {nf}")
        mult.append(ch // nf)
        if any(kinds[i] == "attn" for i in idx):
            attn.append(level)
    downs = [blocks[i]["conv.weight"] for i, k in enumerate(kinds) if k == "down"]
    temporal = [int(w.shape[2]) == 3 for w in downs]
    emb = state["quantize.embedding_s.weight"]
    d = to_dict(load_stage1_config("stage1").model)
    d.update(in_channels=int(blocks[0]["weight"].shape[1]), base_channels=nf,
             channel_mult=mult, num_res_blocks=res_counts.pop(), attn_levels=attn,
             temporal_down=temporal, latent_dim=int(emb.shape[1]),
             codebook_size_s=int(emb.shape[0]),
             codebook_size_t=int(state["quantize.embedding_t.weight"].shape[0]))
    return from_dict(ModelConfig, d)


def infer_variant(state: dict[str, torch.Tensor], variant: str | None = None) -> Variant:
    layers = {int(m.group(1)) for k in state if (m := re.match(r"s_ft_layers\.(\d+)\.", k))}
    t_layers = {int(m.group(1)) for k in state if (m := re.match(r"t_ft_layers\.(\d+)\.", k))}
    if not layers:
        raise AuthorsCheckpointError("no s_ft_layers.*: not a Stage II CodeFormer3D checkpoint "
                                     "(a Stage I VQAutoEncoder3D holds no transformers)")
    if layers != t_layers:
        raise AuthorsCheckpointError(f"s_ft_layers has {len(layers)} layers, t_ft_layers "
                                     f"{len(t_layers)}; CodeFormer3D builds both alike")
    if variant is not None:
        if variant not in VARIANTS:
            raise AuthorsCheckpointError(f"variant {variant!r}: one of {', '.join(VARIANTS)}")
        return VARIANTS[variant]
    n = len(layers)
    for v in VARIANTS.values():      # deflicker and deflickersd share their layout
        if v.layers == n:
            return v
    raise AuthorsCheckpointError(
        f"{n} transformer layers match no released variant (bfvr: 9, deflicker: 6) and the "
        "head count cannot be read from shapes; give the variant (--variant bfvr|deflicker|"
        "deflickersd)")


def authors_config(state: dict[str, torch.Tensor], variant: Variant) -> Stage2Config:
    """The Stage II config of a checkpoint: the variant's preset with the sizes the shapes give."""
    _need(state, "position_emb_s", "s_ft_layers.0.linear1.weight")
    vq = infer_stage1(state)
    cfg = load_stage2_config(variant.preset)
    pos = state["position_emb_s"]
    side = math.isqrt(int(pos.shape[0]))
    if side * side != pos.shape[0]:
        raise AuthorsCheckpointError(f"position_emb_s has {pos.shape[0]} rows, not a square grid")
    width = int(pos.shape[1])
    t = cfg.transformer
    t.layers, t.width, t.heads = len({k.split(".")[1] for k in state
                                      if k.startswith("s_ft_layers.")}), width, variant.heads
    if width % t.heads:
        raise AuthorsCheckpointError(f"width {width} is not divisible by {t.heads} heads "
                                     f"({variant.name}); give another --variant")
    t.mlp_ratio = int(state["s_ft_layers.0.linear1.weight"].shape[0]) / width
    t.attention, t.position, t.proj_in = "frame", "qk", False
    t.motion_residual = "authors_layout"    # what these weights were trained with
    cfg.vqgan = vq
    cfg.data.size = side * vq.spatial_factor
    cfg.data.num_frames = AUTHORS_FRAMES
    return cfg


# ------------------------------------------------------------------ loading
def _describe(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def import_state(state: dict[str, torch.Tensor], variant: str | None = None) -> Imported:
    """Build stc's network for an authors' state dict and load it strictly."""
    v = infer_variant(state, variant)
    cfg = authors_config(state, v)
    model = Stage2Model(cfg)
    expected = expected_layout(model)
    dropped = sorted(k for k in state if k.startswith(UNUSED_PREFIXES))
    given = {k: tuple(t.shape) for k, t in state.items() if not k.startswith(UNUSED_PREFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {list(given[k])} (expected {list(s)})" for k, s in expected.items()
             if k in given and given[k] != s]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_describe(unexpected)}")
    if wrong:
        problems.append(f"misshaped {len(wrong)}: {_describe(wrong, 3)}")
    if problems:
        raise AuthorsCheckpointError(
            f"does not fit CodeFormer3D(n_head={v.heads}, n_layers={cfg.transformer.layers}) with "
            f"nf={cfg.vqgan.base_channels}, ch_mult={list(cfg.vqgan.channel_mult)} as inferred "
            f"from its shapes: " + "; ".join(problems))
    model.load_state_dict(to_stc_state(state, model), strict=True)
    model.eval()
    return Imported(model, v, dropped, sum(state[k].numel() for k in dropped))


def load_authors(path: str | Path, variant: str | None = None) -> Imported:
    path = Path(path).expanduser()
    try:
        return import_state(read_checkpoint(path), variant)
    except AuthorsCheckpointError as exc:
        msg = str(exc)
        raise AuthorsCheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def load_authors_checkpoint(path: str | Path, variant: str | None = None) -> Stage2Model:
    """An authors' released checkpoint (`ckpt-bfvr.pth`, ...) as stc's Stage2Model, loaded
    strictly, in eval mode, on the CPU."""
    return load_authors(path, variant).model


# ------------------------------------------------------------------ their forward
def _token_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, K, t, h, w] -> [B*t, h*w, K] (row b*t + t_i, column h*64 + w)."""
    b, k, t, h, w = logits.shape
    return logits.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, k)


@torch.no_grad()
def authors_decode(model: Stage2Model, idx_s: torch.Tensor, idx_t: torch.Tensor,
                   grid: tuple[int, int, int, int]) -> torch.Tensor:
    """The generator on code indices [B*t, h*w(, 1)] for a latent grid (B, t, h, w), with the
    authors' sigmoid output in [0, 1]."""
    b, t, h, w = grid
    q = model.vqgan.quantizer.lookup(idx_s.reshape(b, t, h, w), idx_t.reshape(b, t, h, w))
    return model.vqgan.decoder(q)


@torch.no_grad()
def authors_forward(model: Stage2Model, x: torch.Tensor):
    """`CodeFormer3D.forward(x)` as infer_bfvr.py calls it: x [B, 3, T, H, W] RGB in [0, 1]
    (H = W = 8 x the position grid's side, 512 for the release) -> (out [B, 3, 2*(T//2), H, W]
    in (0, 1), logits_s, logits_t [B*t, h*w, K], lq_feat [B, D, t, h, w])."""
    model.eval()
    if x.ndim != 5 or x.shape[2] < 2:
        raise ValueError(f"expected [B, 3, T >= 2, H, W], got {tuple(x.shape)}")
    o = model.forward_native(x.float())
    b, _, t, h, w = o.z_l.shape
    logits_s, logits_t = _token_logits(o.logits_s), _token_logits(o.logits_t)
    out = authors_decode(model, logits_s.argmax(-1), logits_t.argmax(-1), (b, t, h, w))
    return out, logits_s, logits_t, o.z_l


# ------------------------------------------------------------------ their frame handling
def authors_runner(model: Stage2Model, device: str = "cpu"):
    """`model` as infer_bfvr.py calls it, for `stc.model.restore.aligned`: [1, 3, T, S, S] RGB
    in [0, 1] -> the output [1, 3, 2*(T//2), S, S] before normalising. Their network works in
    [0, 1] (one sigmoid at the end); a model of stc's own signed range is given the same
    pixels as [-1, 1], and the global min-max of the post-processing undoes the range."""
    unit = model.vqgan.cfg.pixel_range == "unit"

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        with torch.inference_mode():
            out = authors_forward(model, x if unit else x * 2 - 1)[0]
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        return out

    return forward


# ------------------------------------------------------------------ a Stage II run folder
PROVENANCE_FILE = "provenance.json"


def import_run(checkpoint: str | Path, out: str | Path, variant: str | None = None) -> dict:
    """Write an authors' checkpoint as a Stage II run folder (OUT/checkpoints/step_00000000/
    with model + ema safetensors and the config; OUT/provenance.json) that `load_stage2`,
    `stc enhance --checkpoint`, `stc eval` and `stc train stage2 --init` read. Returns the
    provenance. Rerunning on the same file is a no-op; another file into the same folder is
    refused."""
    import json
    import os

    from stc.model.training.checkpoint import latest_checkpoint, save_checkpoint

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    digest = sha256_file(checkpoint) if checkpoint.is_file() else None
    prov_path = out / PROVENANCE_FILE
    if prov_path.exists() or latest_checkpoint(out) is not None:
        old = json.loads(prov_path.read_text()) if prov_path.exists() else {}
        if old.get("sha256") == digest and (variant is None or old.get("variant") == variant):
            return old
        raise ConfigError(f"{out} already holds a run (from {old.get('source_file', 'training')}"
                          f"); import into a new folder")
    imp = load_authors(checkpoint, variant)
    state = imp.model.state_dict()
    prov = {
        "source_file": checkpoint.name,
        "sha256": digest,
        "variant": imp.variant.name,
        "released_as": imp.variant.release,
        "checkpoint_key": CHECKPOINT_KEY,
        "network": (f"CodeFormer3D(n_head={imp.model.cfg.transformer.heads}, "
                    f"n_layers={imp.model.cfg.transformer.layers}) on VQAutoEncoder3D(nf="
                    f"{imp.model.cfg.vqgan.base_channels}, ch_mult="
                    f"{list(imp.model.cfg.vqgan.channel_mult)})"),
        "dropped_unused": {"entries": len(imp.dropped), "parameters": imp.dropped_params,
                           "prefixes": list(UNUSED_PREFIXES)},
        "hq_encoder": "copy of the released LQ encoder (the release holds no Stage I encoder)",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, 0, {"model": state, "ema": state}, {"imported": prov}, imp.model.cfg)
    tmp = prov_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(prov, indent=2) + "\n")
    os.replace(tmp, prov_path)
    return prov


def provenance(run: str | Path) -> dict | None:
    """The provenance of an imported run, or None for a run stc trained."""
    import json

    p = Path(run) / PROVENANCE_FILE
    return json.loads(p.read_text()) if p.exists() else None
