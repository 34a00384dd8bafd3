"""Hard curation cases built from the real shared clips, for tests and the accuracy
benchmark (`benchmarks/curate_accuracy.py`).

None of the clips in ../shared/data/videos has burnt-in text and only one is turned
away, so the cases a curator gets wrong are made here from their real frames:

- text: subtitles, a corner logo and a scrolling news ticker drawn at three sizes onto
  real frontal clips (PIL's bundled font, so no system font is needed), re-encoded with
  x264 at a web-like CRF. Expected: rejected as `text`.
- textless look-alikes: the clip re-encoded untouched, mirrored, rolled by 10 degrees,
  with an empty lower-third band, and with graphics PP-OCR's detector takes for text
  lines (an audio visualiser, a segmented progress bar) that the recogniser cannot read.
  Expected: kept.
- profile views: talkshow_2, a real three-quarter view, mirrored (the nose is now on the
  other side of the face, alpha < 0.4 instead of > 2.5) and mirrored and rotated.
  Expected: rejected as `side_face`.

Sizes are fractions of the frame height, so a case means the same on any base clip.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stc.core.video import encode_frames, probe, read_frames

LABEL_COLUMNS = ("file", "expected", "reason", "why")
SIZES = {"small": 0.03, "medium": 0.045, "large": 0.07}   # text height / frame height
SUBTITLES = ("I think we should talk about it", "because nobody else will",
             "and that is what matters to me")
TICKER = "BREAKING: markets close higher as the storm moves north +++ WEATHER: sunny, 24 C +++ "
LOGO = "NEWS 24"


def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, int(px)))


def subtitles(frames: np.ndarray, size: float, every: int = 40) -> np.ndarray:
    """A subtitle line centred near the bottom, white with a black outline, changing every
    `every` frames as speech goes on."""
    h, w = frames.shape[1:3]
    font, px = _font(size * h), size * h
    out = []
    for t, f in enumerate(frames):
        im = Image.fromarray(f)
        ImageDraw.Draw(im).text((w / 2, h - 2.2 * px), SUBTITLES[(t // every) % len(SUBTITLES)],
                                font=font, fill=(255, 255, 255), anchor="ms",
                                stroke_width=max(1, round(px / 12)), stroke_fill=(0, 0, 0))
        out.append(np.asarray(im))
    return np.stack(out)


def logo(frames: np.ndarray, size: float) -> np.ndarray:
    """A static channel logo in the top-right corner on a translucent dark plate."""
    h, w = frames.shape[1:3]
    font, px = _font(size * h), size * h
    x1, y0 = w - px, px
    l, t, r, b = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), LOGO, font=font)
    plate = (int(x1 - (r - l) - 0.6 * px), int(y0 - 0.4 * px), int(x1 + 0.4 * px), int(y0 + (b - t) + 0.6 * px))
    out = []
    for f in frames:
        im = Image.fromarray(f).convert("RGBA")
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        d.rectangle(plate, fill=(20, 30, 90, 170))
        d.text((x1 - 0.1 * px, y0), LOGO, font=font, fill=(255, 255, 255, 235), anchor="ra")
        out.append(np.asarray(Image.alpha_composite(im, layer).convert("RGB")))
    return np.stack(out)


def ticker(frames: np.ndarray, size: float, speed: float = 0.008) -> np.ndarray:
    """A news ticker: a dark red band along the bottom with text scrolling right to left by
    `speed` x the frame width per frame (about 4 s to cross a frame at 25 fps)."""
    h, w = frames.shape[1:3]
    font, px = _font(size * h), size * h
    band_h = int(round(1.9 * px))
    l, t, r, b = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), TICKER, font=font)
    strip = Image.new("RGB", (r - l, band_h), (150, 20, 25))
    ImageDraw.Draw(strip).text((-l, band_h / 2), TICKER, font=font, fill=(255, 255, 255), anchor="lm")
    strip = np.asarray(strip)
    reps = int(np.ceil(w / strip.shape[1])) + 2
    tiled = np.concatenate([strip] * reps, axis=1)
    out = []
    for t_, f in enumerate(frames):
        f = f.copy()
        x = int(t_ * speed * w) % strip.shape[1]
        f[h - band_h - int(0.02 * h):h - int(0.02 * h)] = tiled[:, x:x + w]
        out.append(f)
    return np.stack(out)


def lower_third_band(frames: np.ndarray, size: float = 0.08) -> np.ndarray:
    """An empty translucent lower-third plate: a text-free box detectors like to fire on."""
    h = frames.shape[1]
    out = frames.copy()
    y0, y1 = int(h * 0.84), int(h * (0.84 + size))
    out[:, y0:y1] = (out[:, y0:y1].astype(np.float32) * 0.35 + np.array([15, 40, 110]) * 0.65).astype(np.uint8)
    return out


def equalizer(frames: np.ndarray, size: float = 0.04) -> np.ndarray:
    """An audio visualiser (podcast style): a row of bars along the bottom, their heights
    moving every frame. PP-OCR's detector takes the row for a text line."""
    h, w = frames.shape[1:3]
    n, base = 14, int(h * 0.95)
    pitch = int(w * 0.8 / n)
    out = frames.copy()
    for t, f in enumerate(out):
        for i in range(n):
            bar = int(size * h * (0.35 + 0.65 * abs(np.sin(0.9 * i + 0.25 * t))))
            x = int(w * 0.1) + i * pitch
            cv2.rectangle(f, (x, base - bar), (x + int(pitch * 0.6), base), (240, 240, 240), -1)
    return out


def progress_bar(frames: np.ndarray, size: float = 0.035) -> np.ndarray:
    """A segmented progress bar whose segments light up one by one over the clip."""
    h, w = frames.shape[1:3]
    n, y0 = 10, int(h * 0.9)
    pitch = int(w * 0.75 / n)
    out = frames.copy()
    for t, f in enumerate(out):
        lit = 1 + t * n // len(out)
        for i in range(n):
            x = int(w * 0.12) + i * pitch
            color = (240, 240, 240) if i < lit else (110, 110, 110)
            cv2.rectangle(f, (x, y0), (x + int(pitch * 0.7), y0 + int(size * h)), color, -1)
    return out


def mirror(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames[:, :, ::-1])


def rotate(frames: np.ndarray, degrees: float) -> np.ndarray:
    """Rolled about the frame centre, edges filled by reflection (no black corners for a
    detector to find)."""
    h, w = frames.shape[1:3]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101) for f in frames])


def untouched(frames: np.ndarray) -> np.ndarray:
    return frames


@dataclass(frozen=True)
class Case:
    name: str
    base: str                       # shared clip it is made from
    make: Callable[[np.ndarray], np.ndarray]
    expected: str                   # kept / rejected / either
    reason: str                     # the expected reason ("kept" when kept)
    why: str
    frames: int | None = 100        # first frames of the base used (None: all)

    @property
    def file(self) -> str:
        return f"{self.name}.mp4"


def _text_cases() -> list[Case]:
    cases = []
    for size, frac in SIZES.items():
        cases += [
            Case(f"subtitles_{size}", "hdtf_2.mp4", partial(subtitles, size=frac), "rejected", "text",
                 f"subtitles {frac:.1%} of the frame high, changing every 1.6 s, drawn on a real frontal clip"),
            Case(f"logo_{size}", "hdtf_4.mp4", partial(logo, size=frac * 0.8), "rejected", "text",
                 f"static '{LOGO}' corner logo {0.8 * frac:.1%} of the frame high, drawn on a real frontal clip"),
            Case(f"ticker_{size}", "hdtf_5.mp4", partial(ticker, size=frac), "rejected", "text",
                 f"scrolling news ticker {frac:.1%} of the frame high, drawn on a real frontal clip"),
        ]
    return cases


CASES: tuple[Case, ...] = (
    *_text_cases(),
    Case("reencoded_hdtf_3", "hdtf_3.mp4", untouched, "kept", "kept",
         "real frontal clip re-encoded untouched: the control for every constructed case"),
    Case("mirrored_hdtf_5", "hdtf_5.mp4", mirror, "kept", "kept",
         "real frontal clip mirrored: still frontal, no text"),
    Case("rolled_hdtf_1", "hdtf_1.mp4", partial(rotate, degrees=10), "kept", "kept",
         "real frontal clip rolled 10 degrees in the image plane: a tilted head, not a profile"),
    Case("band_hdtf_2", "hdtf_2.mp4", lower_third_band, "kept", "kept",
         "real frontal clip with an empty lower-third plate: a text-like box with no text"),
    Case("equalizer_hdtf_3", "hdtf_3.mp4", equalizer, "kept", "kept",
         "real frontal clip with an animated audio visualiser: a line-shaped box the detector "
         "takes for text, which reads as '----'"),
    Case("progress_bar_hdtf_6", "hdtf_6.mp4", progress_bar, "kept", "kept",
         "real frontal clip with a segmented progress bar: detector boxes with no readable text"),
    Case("profile_mirrored_talkshow_2", "talkshow_2.mp4", mirror, "rejected", "side_face",
         "real three-quarter view mirrored: turned the other way (alpha < 0.4 instead of > 2.5)", None),
    Case("profile_mirrored_rotated_talkshow_2", "talkshow_2.mp4",
         lambda f: rotate(mirror(f), degrees=-8), "rejected", "side_face",
         "real three-quarter view mirrored and rolled 8 degrees", None),
)
CASES_BY_NAME = {c.name: c for c in CASES}


def build(case: Case, videos: Path, out_dir: Path, crf: float = 18) -> Path:
    """Write one case as an x264 mp4 at a web-like CRF (so drawn text goes through the
    same compression as real burnt-in text); skips a file that already exists."""
    out = Path(out_dir) / case.file
    if out.exists():
        return out
    src = Path(videos) / case.base
    if not src.is_file():
        raise FileNotFoundError(f"hard case {case.name} needs {src}")
    frames = read_frames(src, 0, case.frames)
    return encode_frames(case.make(frames), out, fps=probe(src).fps, crf=crf, preset="veryfast")


def build_all(videos: Path, out_dir: Path, names: list[str] | None = None) -> list[tuple[Case, Path]]:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    cases = [CASES_BY_NAME[n] for n in names] if names else list(CASES)
    return [(c, build(c, videos, out_dir)) for c in cases]


def write_labels(cases: list[Case], path: Path) -> Path:
    """A labels CSV (file relative to the CSV's folder) in the benchmark's format."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(LABEL_COLUMNS)
        for c in cases:
            w.writerow([c.file, c.expected, c.reason, c.why])
    return Path(path)
