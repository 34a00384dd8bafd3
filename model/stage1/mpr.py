"""Marginal prior regularisation (paper Eq. 6).

For N flattened latents and a K-entry codebook with squared distances d [N, K], the
similarity of latent i to code k is the row-normalised inverse distance

    s_ik = (1 / d_ik) / sum_j (1 / d_ij),

its marginal over the latents is  q_k = (1/N) sum_i s_ik, and the regulariser is the KL
divergence to the uniform prior u_k = 1/K:

    L_MPR = KL(q || u) = sum_k q_k log(q_k K).

The paper writes the Euclidean distance D_E; stc uses squared distances d, as the authors'
code does (the same matrix the nearest-neighbour lookup computes). The KL itself is Eq. 6 as
printed, KL(q || u) = sum_k q_k log(q_k K); the authors' code feeds q through a log-softmax
into torch's KLDivLoss instead, which is not Eq. 6.

It is 0 when every code is, on average, equally close to the latents and log K when one code
takes all the similarity mass; being soft, it moves codes that nearest-neighbour lookup never
selects, which is how it revives dead codes.
"""

from __future__ import annotations

import math

import torch


def similarity_marginal(distances: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """q [K]: the mean over rows of the row-normalised inverse distances [N, K]."""
    inv = 1.0 / (distances.float().clamp_min(0) + eps)
    return (inv / inv.sum(dim=1, keepdim=True)).mean(dim=0)


def kl_to_uniform(q: torch.Tensor) -> torch.Tensor:
    """KL(q || uniform) for a probability vector q [K]."""
    k = q.numel()
    return (q * (q.clamp_min(1e-12).log() + math.log(k))).sum()


def marginal_prior_loss(distances: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_MPR for one codebook from the squared distances [N, K] of N latents to K codes."""
    return kl_to_uniform(similarity_marginal(distances, eps))
