"""Stage II (paper Sec. 3.3): an LQ encoder and two code-lookup transformers on top of a
frozen Stage I 3D-VQGAN.

    z_l      = E_l(lq)                           E_l starts as a copy of E_h
    logits_S = T_S(z_l)                          over C_S
    logits_T = T_T(TA(z_l) + Residual(z_l))      over C_T, on temporal latents as in Stage I
    restored = D_h(C_S[argmax logits_S] + C_T[argmax logits_T])

Training targets come from the frozen Stage I on the HQ clip: its code indices (CE_S, CE_T)
and its fused quantised latents z_q = z_qS + z_qT (L'_f = ||z_l - sg(z_q)||^2, Eq. 8), the
code Stage I's Eq. 7 keeps close to E_h's latents. The frozen model lives inside
this module so a Stage II checkpoint restores on its own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from stc.core.config import load_config
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.stage2.code_transformer import CodeTransformer
from stc.model.stage2.config import Stage2Config
from stc.model.stage2.runs import final_step_dir
from stc.model.training.checkpoint import (
    CONFIG_FILE,
    load_weights,
    read_safetensors,
    resolve_checkpoint,
)


class Stage2Output(NamedTuple):
    z_l: torch.Tensor          # [B, D, t, h, w]
    logits_s: torch.Tensor     # [B, K_S, t, h, w]
    logits_t: torch.Tensor     # [B, K_T, t, h, w]


class Targets(NamedTuple):
    z_q: torch.Tensor          # fused quantised HQ latents
    indices_s: torch.Tensor    # [B, t, h, w]
    indices_t: torch.Tensor


def authors_layout_residual(z: torch.Tensor) -> torch.Tensor:
    """The "motion residual" of the authors' Stage II forward, reproduced for their weights.

    z [B, C, t, h, w] is permuted to a contiguous (C, B, t, h, w) buffer, viewed as t rows of
    C*B*h*w values, each row i >= 1 replaced by row i - row (i - 1) and row 0 by zeros, and the
    buffer viewed back as (t, B, h, w, C). A row is therefore not a frame (for B = 1, t = 2 row
    0 holds channels 0..C/2-1 of both frames), so this is not a frame difference; stc's
    default ("difference") is the true z_t - z_{t-1} of Eq. 3. Returned as [B, C, t, h, w].
    """
    b, c, t, h, w = z.shape
    rows = z.permute(1, 0, 2, 3, 4).contiguous().view(t, -1)
    diff = torch.cat([torch.zeros_like(rows[:1]), rows[1:] - rows[:-1]], dim=0)
    return diff.view(t, b, h, w, c).permute(1, 4, 0, 2, 3)


class Stage2Model(nn.Module):
    def __init__(self, cfg: Stage2Config, vqgan: VQGAN3D | None = None):
        super().__init__()
        self.cfg = cfg
        vqgan = vqgan if vqgan is not None else VQGAN3D(cfg.vqgan)
        cfg.check_against(vqgan.cfg)
        self.lq_encoder = copy.deepcopy(vqgan.encoder).requires_grad_(True)
        self.vqgan = vqgan.eval().requires_grad_(False)
        grid = cfg.token_grid()
        v = vqgan.cfg
        self.transformer_s = CodeTransformer(v.latent_dim, v.codebook_size_s, grid, cfg.transformer)
        self.transformer_t = CodeTransformer(v.latent_dim, v.codebook_size_t, grid, cfg.transformer)

    def train(self, mode: bool = True) -> "Stage2Model":
        super().train(mode)
        self.vqgan.eval()      # frozen, including its normalisation statistics
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("vqgan.")]

    def temporal_input(self, z_l: torch.Tensor) -> torch.Tensor:
        """TA(z_l) + R(z_l), the temporal transformer's input (`transformer.motion_residual`)."""
        q = self.vqgan.quantizer
        if self.cfg.transformer.motion_residual == "authors_layout":
            return q.temporal_attention(z_l) + authors_layout_residual(z_l)
        return q.temporal_latents(z_l)

    def forward_native(self, x: torch.Tensor) -> Stage2Output:
        """The forward on input already in the network's own pixel range."""
        z_l = self.lq_encoder(x)
        return Stage2Output(z_l, self.transformer_s(z_l), self.transformer_t(self.temporal_input(z_l)))

    def forward(self, lq: torch.Tensor) -> Stage2Output:
        """LQ clips [B, 3, T, H, W] in [-1, 1]."""
        self.vqgan.check_input(lq)
        return self.forward_native(self.vqgan.to_native(lq))

    @torch.no_grad()
    def targets(self, hq: torch.Tensor) -> Targets:
        q = self.vqgan.quantize(self.vqgan.encode(hq))
        return Targets(q.z_q.detach(), q.indices_s, q.indices_t)

    def losses(self, out: Stage2Output, tgt: Targets) -> dict[str, torch.Tensor]:
        L = self.cfg.losses
        feat = F.mse_loss(out.z_l.float(), tgt.z_q.float())
        ce_s = F.cross_entropy(out.logits_s.float(), tgt.indices_s)
        ce_t = F.cross_entropy(out.logits_t.float(), tgt.indices_t)
        total = L.feature * feat + L.ce * (ce_s + ce_t)
        with torch.no_grad():
            acc_s = (out.logits_s.argmax(1) == tgt.indices_s).float().mean()
            acc_t = (out.logits_t.argmax(1) == tgt.indices_t).float().mean()
        return {"loss/total": total, "loss/feature": feat, "loss/ce_s": ce_s, "loss/ce_t": ce_t,
                "train/acc_s": acc_s, "train/acc_t": acc_t}

    @torch.no_grad()
    def decode_logits(self, out: Stage2Output) -> torch.Tensor:
        z_q = self.vqgan.lookup(out.logits_s.argmax(1), out.logits_t.argmax(1))
        return self.vqgan.decode(z_q)

    @torch.no_grad()
    def restore(self, lq: torch.Tensor) -> torch.Tensor:
        """LQ clips [B, 3, T, H, W] in [-1, 1] -> restored clips, same shape, clamped."""
        return self.decode_logits(self(lq)).float().clamp(-1, 1)


def load_stage2(path: str | Path, device: str | torch.device = "cpu",
                ema: bool = True) -> tuple[Stage2Model, Stage2Config]:
    """A trained Stage II model in eval mode, and its config.

    `path` is a Stage II run folder (the last step of its curriculum), one step's run folder,
    a checkpoint folder, or a .safetensors file inside one (that file is loaded). The EMA
    weights by default, when the checkpoint has them.
    """

    path = Path(path).expanduser()

    step_dir = final_step_dir(path)
    ckpt = resolve_checkpoint(step_dir if step_dir is not None else path)
    cfg = load_config(Stage2Config, ckpt / CONFIG_FILE)
    model = Stage2Model(cfg)
    if path.is_file():
        state = read_safetensors(path)
    else:
        name = "ema" if ema and (ckpt / "ema.safetensors").exists() else "model"
        state = load_weights(ckpt, name)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the saved Stage II config ({exc})") from None
    return model.to(device).eval(), cfg
