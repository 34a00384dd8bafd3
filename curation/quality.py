"""Face quality gate: is the face sharp, really high-resolution and free of blocking?

A curated clip is ground truth for a restoration model, so a face that is already
degraded must not pass as HQ: an old low-resolution face scaled up into the frame, a
defocused or motion-blurred face, a face crushed by heavy compression. Each detected face
of each sampled frame is measured on the source's own luma (full resolution, taken from
the one decode), and a clip takes the median over its frames:

- `effective_resolution`: the face side in source pixels divided by the largest factor k
  it can be shrunk by and scaled back (area down, bicubic up) while losing less than
  `LOSS` of its band-pass energy. A sharp 300 px face measures ~200-300 px; the same
  face blurred and shrunk 2-4x and scaled back up (stc's bfvr recipe) measures 65-105 px,
  whatever its size on screen.
- `sharpness`: share of the face's band-pass energy at the finest scale, the face resized
  to `SHARP_SIZE` px so that it means the same for every face size: energy of (I - G_1 I)
  over energy of (I - G_4 I), G_s a Gaussian blur of sigma s px.
- `blockiness`: how much larger the luma steps across the coded 8x8 block edges are than
  the steps inside blocks, in grey levels (0: no blocking). Codecs without an in-loop
  deblocking filter (JPEG, MPEG-2, MPEG-4 Part 2) leave it at 2-6 when starved of bits;
  H.264 smooths its block edges, so heavy x264 compression shows as lost detail instead
  (`sharpness`, `effective_resolution`).

Only numbers here; the clip step (`curation.clip`) applies the thresholds of
`QualityConfig`, which also says how they were calibrated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from stc.curation.config import QualityConfig
from stc.curation.faces import Box

# Shrink factors tried for the effective resolution, and the share of the band-pass
# energy a shrink may lose and still count as lossless (the face held no finer detail).
FACTORS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
LOSS = 0.02
BAND_SIGMA = 6.0            # the band-pass reference: detail finer than G_6
SHARP_SIZE = 128            # face side the sharpness is measured at, px
BLOCK = 8                   # the coded block grid (JPEG, MPEG-2/4, H.264's 8x8 transform)


@dataclass(frozen=True)
class FaceQuality:
    effective_resolution: float   # px: the face side it really has detail for
    sharpness: float              # fine-scale share of band-pass energy at SHARP_SIZE
    blockiness: float             # excess step across 8x8 block edges, grey levels

    def as_list(self) -> list[float]:
        return [round(self.effective_resolution, 1), round(self.sharpness, 4), round(self.blockiness, 3)]


def face_region(luma: np.ndarray, box: Box) -> tuple[np.ndarray, int, int]:
    """The face box cut from a full-resolution luma frame, and its top-left corner."""
    h, w = luma.shape[:2]
    x0, y0 = max(0, int(round(box.x0))), max(0, int(round(box.y0)))
    x1, y1 = min(w, int(round(box.x1))), min(h, int(round(box.y1)))
    return luma[y0:y1, x0:x1], x0, y0


def effective_resolution(g: np.ndarray) -> float:
    g = g.astype(np.float32)
    h, w = g.shape
    band = float(np.mean((g - cv2.GaussianBlur(g, (0, 0), BAND_SIGMA)) ** 2)) + 1.0
    best = 1.0
    for k in FACTORS:
        down = cv2.resize(g, (max(8, round(w / k)), max(8, round(h / k))), interpolation=cv2.INTER_AREA)
        up = cv2.resize(down, (w, h), interpolation=cv2.INTER_CUBIC)
        if float(np.mean((g - up) ** 2)) / band < LOSS:
            best = k
    return min(h, w) / best


def sharpness(g: np.ndarray) -> float:
    interp = cv2.INTER_AREA if min(g.shape) >= SHARP_SIZE else cv2.INTER_CUBIC
    r = cv2.resize(g, (SHARP_SIZE, SHARP_SIZE), interpolation=interp).astype(np.float32)
    fine = float(np.mean((r - cv2.GaussianBlur(r, (0, 0), 1.0)) ** 2))
    coarse = float(np.mean((r - cv2.GaussianBlur(r, (0, 0), 4.0)) ** 2))
    return fine / (coarse + 1.0)


def blockiness(g: np.ndarray, x0: int, y0: int) -> float:
    """Excess luma step across the frame's 8x8 grid (the region starts at (x0, y0)): mean
    |step| between pixels on either side of a block edge minus the mean |step| between
    neighbours inside blocks, in grey levels, averaged over both axes."""
    g = g.astype(np.float32)
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    if dx.shape[1] < 2 * BLOCK or dy.shape[0] < 2 * BLOCK:
        return 0.0
    # The step between columns x and x+1 crosses a block edge when x+1 is a multiple of 8.
    on_x = (np.arange(dx.shape[1]) + x0 + 1) % BLOCK == 0
    on_y = (np.arange(dy.shape[0]) + y0 + 1) % BLOCK == 0
    ex = dx[:, on_x].mean() - dx[:, ~on_x].mean()
    ey = dy[on_y].mean() - dy[~on_y].mean()
    return float((ex + ey) / 2)


def measure(luma: np.ndarray, box: Box) -> FaceQuality | None:
    """One face of one frame, `box` in the luma's pixels; None when too little is inside."""
    g, x0, y0 = face_region(luma, box)
    if min(g.shape[:2]) < 2 * BLOCK:
        return None
    return FaceQuality(effective_resolution(g), sharpness(g), blockiness(g, x0, y0))


@dataclass
class QualityStats:
    frames: int
    effective_resolution: float | None
    sharpness: float | None
    blockiness: float | None
    evidence: dict = field(default_factory=dict)

    def evidence_json(self) -> str:
        return json.dumps(self.evidence, separators=(",", ":"))

    def verdict(self, cfg: QualityConfig) -> tuple[str, str] | None:
        """(reason, what failed) for the first threshold missed, None when all pass."""
        if self.frames == 0:
            return None
        if self.effective_resolution < cfg.min_effective_resolution:
            return "low_resolution", (f"face detail of a {self.effective_resolution:.0f} px face "
                                      f"(min_effective_resolution={cfg.min_effective_resolution:g}): "
                                      "an upscaled or low-resolution face")
        if self.sharpness < cfg.min_sharpness:
            return "blurry", (f"face sharpness {self.sharpness:.3f} "
                              f"(min_sharpness={cfg.min_sharpness:g})")
        if self.blockiness > cfg.max_blockiness:
            return "compressed", (f"luma steps {self.blockiness:.2f} grey levels larger across "
                                  f"8x8 block edges than inside blocks (max_blockiness="
                                  f"{cfg.max_blockiness:g}): heavy compression")
        return None


def summarise(per_frame: list[tuple[int, FaceQuality]]) -> QualityStats:
    """Clip statistics: medians over the measured frames, and each frame's figures."""
    evidence = {"frames": [int(i) for i, _ in per_frame],
                "effective_resolution_sharpness_blockiness": [q.as_list() for _, q in per_frame]}
    if not per_frame:
        return QualityStats(0, None, None, None, evidence)
    qs = [q for _, q in per_frame]
    return QualityStats(len(qs), float(np.median([q.effective_resolution for q in qs])),
                        float(np.median([q.sharpness for q in qs])),
                        float(np.median([q.blockiness for q in qs])), evidence)
