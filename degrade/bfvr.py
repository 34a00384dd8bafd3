"""BFVR degradation (paper Eq. 9): y = up_r( ffmpeg_crf( (x conv k_sigma) down_r + n_delta ) ).

One parameter set per video, each parameter drawn independently from its own range
(the published loader ties sigma, r and delta to one random number and reuses one noise
image for every frame; this does neither): Gaussian blur sigma, downscale factor r,
noise level delta (0-255 scale, fresh noise each frame at that level) and the CRF of a
real libx264 encode of the whole low-resolution clip. The clip is decoded and resized
back to the HQ size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stc.core.video import X264Preset, cv2_interp
from stc.degrade.codec import encode_h264
from stc.degrade.video import Video


@dataclass
class BFVRConfig:
    sigma: tuple[float, float] = (2.0, 5.0)        # Gaussian blur sigma, pixels at HQ size
    kernel_size: int = 11                          # odd; the authors' blur_kernel_size
    scale: tuple[float, float] = (2.0, 4.0)        # r: HQ size / low-res size
    noise: tuple[float, float] = (0.0, 5.0)        # delta: Gaussian noise std, 0-255 scale
    crf: tuple[int, int] = (18, 25)                # libx264 CRF, integers, both ends included
    preset: X264Preset = "medium"                  # libx264 preset of the compression
    down_interp: str = "bilinear"                  # the authors' cv2.INTER_LINEAR
    up_interp: str = "bilinear"                    # back to the HQ size, as the authors

    def __post_init__(self) -> None:
        for name in ("sigma", "scale", "noise", "crf"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: range [{lo}, {hi}] is reversed; write [low, high]")
        if self.sigma[0] <= 0 or self.scale[0] < 1 or self.noise[0] < 0:
            raise ValueError("sigma must be > 0, scale >= 1 and noise >= 0")
        if not (0 <= self.crf[0] and self.crf[1] <= 51):
            raise ValueError(f"crf range {list(self.crf)} must lie in [0, 51]")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd number >= 3, got {self.kernel_size}")
        cv2_interp(self.down_interp)
        cv2_interp(self.up_interp)


@dataclass
class BFVRParams:
    sigma: float
    kernel_size: int
    scale: float
    lowres_width: int
    lowres_height: int
    noise: float
    crf: int
    preset: str
    down_interp: str
    up_interp: str
    lq_stream_bytes: int = 0


def lowres_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """HQ size / r, rounded to even numbers (yuv420p needs them), at least 2."""
    def one(n: int) -> int:
        return max(2, 2 * int(round(n / scale / 2)))
    return one(width), one(height)


class BFVR:
    name = "bfvr"

    def __init__(self, config: BFVRConfig | None = None):
        self.config = config or BFVRConfig()

    def draw(self, rng: np.random.Generator, width: int, height: int) -> BFVRParams:
        c = self.config
        sigma = float(rng.uniform(*c.sigma))
        scale = float(rng.uniform(*c.scale))
        noise = float(rng.uniform(*c.noise))
        crf = int(rng.integers(c.crf[0], c.crf[1], endpoint=True))
        lw, lh = lowres_size(width, height, scale)
        return BFVRParams(sigma=sigma, kernel_size=c.kernel_size, scale=scale, lowres_width=lw,
                          lowres_height=lh, noise=noise, crf=crf, preset=c.preset,
                          down_interp=c.down_interp, up_interp=c.up_interp)

    @staticmethod
    def prefilter(frames: np.ndarray, p: BFVRParams) -> np.ndarray:
        """(x conv k_sigma) down_r for every frame with the same kernel: uint8 [T, h, w, 3]."""
        import cv2

        k = p.kernel_size
        out = []
        for f in frames:
            blurred = cv2.GaussianBlur(f, (k, k), p.sigma, borderType=cv2.BORDER_REFLECT_101)
            out.append(cv2.resize(blurred, (p.lowres_width, p.lowres_height),
                                  interpolation=cv2_interp(p.down_interp)))
        return np.stack(out)

    @staticmethod
    def add_noise(low: np.ndarray, p: BFVRParams, rng: np.random.Generator) -> np.ndarray:
        """+ n_delta: fresh Gaussian noise for each frame, all at the video's delta."""
        if p.noise <= 0:
            return low
        out = np.empty_like(low)
        for i, f in enumerate(low):
            n = rng.standard_normal(f.shape, dtype=np.float32) * np.float32(p.noise)
            out[i] = np.clip(np.rint(f.astype(np.float32) + n), 0, 255).astype(np.uint8)
        return out

    def apply(self, video: Video, p: BFVRParams, rng: np.random.Generator) -> Video:
        low = self.add_noise(self.prefilter(video.frames, p), p, rng)
        stream = encode_h264(low, video.fps, p.crf, p.preset, what="BFVR compression")
        p.lq_stream_bytes = len(stream)
        return Video.from_bitstream(stream, video.fps, video.width, video.height, p.up_interp)

