"""Stage I objective pieces (paper Sec. 3.2, L_I below Eq. 7) and the VQGAN adaptive
adversarial weight.

L_I = l1 * L1 + perceptual * L_per + adversarial * lambda * L_adv + code * L_f (Eq. 7, on
      the fused code) + mpr * (L_KL^S + L_KL^T) (Eq. 6),
where the paper writes weight 1 for every term but lambda_adv (whose value it does not give);
the weights' sources are in `model/stage1/config.py` (LossConfig),
with lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_adv|| + 1e-4) at the decoder's last layer
G_L (Esser et al., 2021), clamped to [0, adv_weight_max] and detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1.0e4) -> torch.Tensor:
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    w = rec_grad.float().norm() / (adv_grad.float().norm() + 1e-4)
    return w.clamp(0.0, max_weight).detach()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (measured on [0, 1]), one value per batch item."""
    p = ((pred.float().clamp(-1, 1) + 1) / 2)
    t = ((target.float().clamp(-1, 1) + 1) / 2)
    mse = (p - t).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)
