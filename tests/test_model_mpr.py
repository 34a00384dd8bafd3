"""Marginal prior regularisation (Eq. 6): its value at the extremes and its effect."""

from __future__ import annotations

import math

import torch

from stc.model.stage1.codebook import Codebook, code_counts, code_loss, utilisation
from stc.model.stage1.mpr import kl_to_uniform, marginal_prior_loss, similarity_marginal


def test_kl_is_zero_for_a_uniform_marginal():
    k = 64
    assert float(kl_to_uniform(torch.full((k,), 1 / k))) < 1e-6
    # Every latent equally far from every code -> uniform marginal -> no penalty.
    assert float(marginal_prior_loss(torch.full((100, k), 3.0))) < 1e-6


def test_kl_is_large_for_a_collapsed_marginal():
    k = 64
    d = torch.full((100, k), 4.0)
    d[:, 7] = 0.0                                    # every latent sits on code 7
    q = similarity_marginal(d)
    assert int(q.argmax()) == 7 and float(q[7]) > 0.99
    loss = float(marginal_prior_loss(d))
    assert loss > 0.9 * math.log(k)                  # the maximum is log K
    assert loss <= math.log(k) + 1e-5


def _train_codebook(mpr_weight: float, steps: int = 150) -> float:
    """Fit a 64-code codebook to fixed latents; return utilisation on those latents.

    The codes start in a far corner, the usual cause of collapse: nearest-neighbour updates
    only move the few codes that win, while MPR pulls every code toward the data.
    """
    torch.manual_seed(0)
    latents = torch.randn(256, 8)
    book = Codebook(64, 8)
    with torch.no_grad():
        book.weight.copy_(torch.randn(64, 8) * 0.1 + 4.0)
    opt = torch.optim.Adam(book.parameters(), lr=0.05)
    for _ in range(steps):
        q, idx, d = book(latents)
        loss = code_loss(latents, q, 0.25) + mpr_weight * marginal_prior_loss(d)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, idx, _ = book(latents)
    return utilisation(code_counts(idx, 64))


def test_mpr_raises_codebook_utilisation_on_a_toy_problem():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: threading only adds overhead
    try:
        plain = _train_codebook(0.0)
        regularised = _train_codebook(1.0)
    finally:
        torch.set_num_threads(threads)
    assert regularised > plain + 0.2, (plain, regularised)
