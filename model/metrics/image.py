"""Full-reference image metrics: PSNR and Gaussian-window SSIM, on luma or RGB.

Both follow BasicSR (`calculate_psnr` / `calculate_ssim`), the code most face and video
restoration papers report with: uint8 range (255), BT.601 "studio" luma
Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 kept as float, SSIM with an 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over the valid region.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB uint8 image [H, W, 3], float64 in [16, 235]."""
    return rgb.astype(np.float64) @ _Y_WEIGHTS + 16.0


def channels(rgb: np.ndarray, color: str) -> np.ndarray:
    """The planes metrics compare: [H, W, 1] luma or [H, W, 3] RGB, float64."""
    if color == "y":
        return to_y(rgb)[..., None]
    return rgb.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, cap: float = 100.0) -> float:
    """PSNR in dB (peak 255) of two float images; identical images give `cap`, not inf."""
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return cap
    return min(cap, 10.0 * math.log10(255.0 ** 2 / mse))


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    k = cv2.getGaussianKernel(11, 1.5)
    return k @ k.T


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _window()

    def blur(x: np.ndarray) -> np.ndarray:
        # 'valid' region only, as BasicSR: the window never reads the border padding.
        return cv2.filter2D(x, -1, w)[5:-5, 5:-5]

    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a ** 2
    vb = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the planes of two float images [H, W, C] (each side >= 11 px)."""
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[-1])]))
