"""Burnt-in text with PaddleOCR's PP-OCR models: detect, check the shape, read, persist.

PP-OCR's DB detector alone is not a text test: on faces, hair and plain walls it returns
boxes (often one covering most of the crop) at scores of 0.5-0.75, as high as small real
text. A box therefore counts as text only when

1. it has a text line's shape: wider than tall and not a large part of the crop;
2. the PP-OCR recogniser reads a letter or digit in it with a line score of at least
   `min_rec_score` (0.95, the authors' threshold): real text scores 0.95-1.0, the false
   boxes read as one odd glyph at 0.2-0.5, graphics (bars, blocks) as "----" at <= 0.85;
3. the same line is read on more than one sampled frame: burnt-in text stays put.

The recogniser reads Latin and Chinese only: Cyrillic comes back as blanks and commas,
Arabic as nothing, Devanagari as a few random CJK glyphs at 0.3-0.4. So an unread line is
text as well when it is drawn with glyph strokes and stays at one place: its line image
(normalised to 32 px high) crosses at least `min_stroke_transitions` sharp edges per line
height along its middle (burnt-in text in four scripts: 9-17; empty plates, bars, level
meters and real walls or hair: 0-3.4), and a box at the same place (same line band,
overlapping in x) has them on `min_static_frames` analysed frames. Subtitles, logos and
tickers are static; the recogniser is extra evidence, not a veto.

The default runtime is the PP-OCR detection and recognition ONNX models that ship inside
`rapidocr`, run by onnxruntime: no download. The `paddleocr` package is an optional
backend for users who have it and give local model folders.

Every box the detector returned is kept with its verdict, so a manifest row can say why
a clip went (`TextStats.evidence`), in input pixel coordinates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from stc.curation.config import TextConfig

# Box verdicts, from the first test a box failed to the last one it passed.
NOT_A_LINE = "not_a_line"   # shape: taller than wide, or too large a part of the crop
UNREAD = "unread"           # the recogniser read nothing above min_rec_score
GLYPHS = "glyphs"           # unread, but drawn with glyph strokes (any script)
LONE = "lone"               # read, but on too few frames to be burnt-in text
TEXT = "text"               # read on enough frames: burnt-in text
# The evidence keeps at most this many boxes per frame, most telling first; a frame full
# of text would otherwise put hundreds of boxes into one manifest row.
EVIDENCE_BOXES_PER_FRAME = 12
_VERDICT_ORDER = {TEXT: 0, LONE: 1, GLYPHS: 2, UNREAD: 3, NOT_A_LINE: 4}
# Line images are measured at this height for stroke transitions.
STROKE_HEIGHT = 32
# A sharp edge: a step of at least this many grey levels between neighbouring pixels.
STROKE_STEP = 30


@dataclass
class TextBox:
    poly: np.ndarray            # 4x2 corners, clockwise from the line's top-left
    det_score: float            # DB box score
    text: str = ""              # what the recogniser read ("" when it was not asked)
    rec_score: float | None = None  # its line score; None when the box was not read
    verdict: str = NOT_A_LINE
    strokes: float | None = None    # sharp edges crossed per line height (None: not a line)
    by: str = ""                    # what made it text: "read", "static" (set by summarise)

    @property
    def read(self) -> bool:
        """The recogniser read it (a TEXT box without `by` comes from before `by`)."""
        return self.verdict == LONE or "read" in self.by or (self.verdict == TEXT and not self.by)

    @property
    def candidate(self) -> bool:
        """Read, or drawn with glyph strokes: may be text if it persists."""
        return self.verdict in (LONE, GLYPHS, TEXT)

    def mapped(self, scale: float, dx: float, dy: float) -> "TextBox":
        """The box in other pixels: `poly / scale + (dx, dy)`."""
        return replace(self, poly=self.poly / scale + np.array([dx, dy]))

    def to_json(self, frame: int) -> dict:
        return {"frame": int(frame), "poly": np.round(self.poly, 1).tolist(),
                "det": round(self.det_score, 4), "text": self.text,
                "rec": None if self.rec_score is None else round(self.rec_score, 4),
                "strokes": None if self.strokes is None else round(self.strokes, 2),
                "verdict": self.verdict, **({"by": self.by} if self.by else {})}


@dataclass
class FrameText:
    """One analysed frame: its index in the video and every box the detector returned."""

    index: int
    boxes: list[TextBox]
    area: float                 # analysed region's area, in the boxes' pixels squared

    def mapped(self, scale: float, dx: float, dy: float) -> "FrameText":
        return FrameText(self.index, [b.mapped(scale, dx, dy) for b in self.boxes],
                         self.area / scale ** 2)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _side_lengths(poly: np.ndarray) -> tuple[float, float]:
    """(width, height) along the box's own orientation."""
    return float(np.linalg.norm(poly[1] - poly[0])), float(np.linalg.norm(poly[3] - poly[0]))


# PP-OCR's recogniser reads lines 48 px high.
REC_HEIGHT = 48


def line_crop(bgr: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """The box straightened into an upright line image, as the recogniser wants it.

    A line lower than the recogniser's input is enlarged here with bicubic interpolation
    rather than left to the recogniser's bilinear resize: on a 12 px logo that lifts the
    line score from 0.94-0.99 to 0.96-1.0, so small real text clears min_rec_score."""
    import cv2

    w, h = _side_lengths(poly)
    scale = max(1.0, REC_HEIGHT / max(h, 1.0))
    w, h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = cv2.getPerspectiveTransform(poly.astype(np.float32), dst)
    return cv2.warpPerspective(bgr, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def stroke_transitions(line_rgb_or_bgr: np.ndarray) -> float:
    """Sharp edges crossed per line height along the middle half of a line image: glyphs
    of any script are dense strokes (9-17 measured), plates, bars and level meters are a
    few wide shapes (0-3.4), so this tells drawn text from graphics the recogniser cannot
    read either."""
    import cv2

    g = cv2.cvtColor(line_rgb_or_bgr, cv2.COLOR_BGR2GRAY) if line_rgb_or_bgr.ndim == 3 else line_rgb_or_bgr
    h, w = g.shape[:2]
    if h < 2 or w < 2:
        return 0.0
    g = cv2.resize(g, (max(8, int(round(w * STROKE_HEIGHT / h))), STROKE_HEIGHT),
                   interpolation=cv2.INTER_AREA).astype(np.float32)
    mid = g[STROKE_HEIGHT // 4: 3 * STROKE_HEIGHT // 4]
    steps = (np.abs(np.diff(mid, axis=1)) > STROKE_STEP).sum(axis=1).mean()
    return float(steps / (g.shape[1] / STROKE_HEIGHT))


class _RapidOCR:
    def __init__(self, cfg: TextConfig, threads: int):
        from rapidocr import RapidOCR

        self._ocr = RapidOCR(params={
            "Global.log_level": "error",
            "Det.limit_side_len": cfg.limit_side_len,
            "Det.box_thresh": cfg.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    # rapidocr reads OpenCV's BGR order. The use_* flags go on every call because rapidocr
    # otherwise falls back to its config's full det+cls+rec pipeline.
    def detect(self, bgr: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        out = self._ocr(bgr, use_det=True, use_cls=False, use_rec=False)
        if out.boxes is None:
            return [], []
        return [np.asarray(b, dtype=np.float64) for b in out.boxes], [float(s) for s in out.scores]

    def read(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        out = []
        for line in lines:
            r = self._ocr(line, use_det=False, use_cls=False, use_rec=True)
            out.append((str(r.txts[0]), float(r.scores[0])) if r.txts else ("", 0.0))
        return out


class _PaddleOCR:
    def __init__(self, cfg: TextConfig, threads: int):
        needed = ["paddle_det_model_dir"] + (["paddle_rec_model_dir"] if cfg.recognize else [])
        missing = [k for k in needed if not getattr(cfg, k)]
        if missing:
            raise ValueError(
                f"text.backend 'paddleocr' needs text.{' and text.'.join(missing)}: local PP-OCR "
                "model folders (paddleocr cannot download models here)")
        try:
            import paddleocr
        except ImportError as exc:
            raise ValueError("text.backend 'paddleocr' needs `pip install paddleocr paddlepaddle`") from exc
        self._det = paddleocr.TextDetection(model_dir=cfg.paddle_det_model_dir,
                                            limit_side_len=cfg.limit_side_len, box_thresh=cfg.box_thresh)
        self._rec = (paddleocr.TextRecognition(model_dir=cfg.paddle_rec_model_dir)
                     if cfg.recognize else None)

    def detect(self, bgr: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        res = self._det.predict(bgr)[0]
        return ([np.asarray(p, dtype=np.float64) for p in res["dt_polys"]],
                [float(s) for s in res["dt_scores"]])

    def read(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        return [(str(r["rec_text"]), float(r["rec_score"])) for r in self._rec.predict(lines)]


class TextDetector:
    """PP-OCR on RGB frames: every returned box with its shape and reading verdict."""

    def __init__(self, cfg: TextConfig, threads: int = 1):
        self.cfg = cfg
        backend = {"rapidocr": _RapidOCR, "paddleocr": _PaddleOCR}[cfg.backend]
        self._ocr = backend(cfg, threads)

    def is_text_line(self, poly: np.ndarray, image_height: int) -> bool:
        width, height = _side_lengths(poly)
        return (height > 0 and width / height >= self.cfg.min_aspect
                and height <= self.cfg.max_height_fraction * image_height)

    def __call__(self, rgb: np.ndarray) -> list[TextBox]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        polys, scores = self._ocr.detect(bgr)
        boxes = [TextBox(p, s) for p, s in zip(polys, scores)]
        lines = [b for b in boxes if self.is_text_line(b.poly, rgb.shape[0])]
        crops = [line_crop(bgr, b.poly) for b in lines]
        for b, crop in zip(lines, crops):
            b.strokes = stroke_transitions(crop)
        if not self.cfg.recognize:
            # Detector and shape only (persistence still applies): kept to measure what
            # the recogniser costs and what it saves.
            for b in lines:
                b.verdict = LONE
            return boxes
        # Only line-shaped boxes are read: the recogniser's time then goes to the few
        # boxes that might be text, and a textless frame usually has none.
        for b, (txt, score) in zip(lines, self._ocr.read(crops)):
            b.text, b.rec_score = txt, score
            # A letter or digit must be among what was read: bars, blocks and rules read
            # as "----" or "■" at scores up to ~0.85, and they are not text either.
            readable = any(c.isalnum() for c in txt)
            if readable and score >= self.cfg.min_rec_score:
                b.verdict = LONE
            else:
                b.verdict = GLYPHS if b.strokes >= self.cfg.min_stroke_transitions else UNREAD
        return boxes

    def frame(self, index: int, rgb: np.ndarray) -> FrameText:
        return FrameText(index, self(rgb), float(rgb.shape[0] * rgb.shape[1]))


def same_place(a: np.ndarray, b: np.ndarray, min_overlap: float) -> bool:
    """Same line band (`same_line`) and overlapping in x by `min_overlap` of the narrower
    box: a subtitle changing its words stays centred, a logo does not move."""
    a0, a1 = float(a[:, 0].min()), float(a[:, 0].max())
    b0, b1 = float(b[:, 0].min()), float(b[:, 0].max())
    narrower = min(a1 - a0, b1 - b0)
    return (same_line(a, b, min_overlap) and narrower > 0
            and (min(a1, b1) - max(a0, b0)) >= min_overlap * narrower)


def same_line(a: np.ndarray, b: np.ndarray, min_overlap: float) -> bool:
    """Whether two boxes sit on the same text line: their vertical extents overlap by
    `min_overlap` of the shorter one. x is left out on purpose: a ticker scrolls along
    its line and subtitles change length, but both keep their height on screen."""
    a0, a1 = float(a[:, 1].min()), float(a[:, 1].max())
    b0, b1 = float(b[:, 1].min()), float(b[:, 1].max())
    shorter = min(a1 - a0, b1 - b0)
    return shorter > 0 and (min(a1, b1) - max(a0, b0)) >= min_overlap * shorter


@dataclass
class TextStats:
    frames: int
    text_frames: int            # analysed frames showing persistent, read text
    has_text: bool
    max_score: float            # best line-shaped box's recogniser score (its detector score
                                # when recognition is off); 0 when there was no line
    boxes: int                  # boxes judged text
    area_fraction: float        # largest per-frame share of the crop covered by text boxes
    evidence: dict = field(default_factory=dict)

    def evidence_json(self) -> str:
        return json.dumps(self.evidence, separators=(",", ":"), ensure_ascii=False)

    def describe(self, n: int = 3) -> str:
        """What was read, for a manifest message: `text on 4 of 6 frames: "NEWS 24" 0.99`."""
        best: dict[str, float] = {}
        unread = 0
        for b in self.evidence.get("boxes", []):
            if b["verdict"] == TEXT and b.get("by") == "static":
                unread += 1
            elif b["verdict"] == TEXT and b["text"]:
                best[b["text"]] = max(best.get(b["text"], 0.0), b["rec"] or b["det"])
        shown = sorted(best.items(), key=lambda t: -t[1])[:n]
        more = f" and {len(best) - n} more" if len(best) > n else ""
        if unread:
            more += (", and " if shown else "") + (f"{unread} unread glyph line(s) at one place")
        return (f"text on {self.text_frames} of {self.frames} frames: "
                + ", ".join(f"{json.dumps(t, ensure_ascii=False)} {s:.2f}" for t, s in shown) + more)


def summarise(frames: list[FrameText], cfg: TextConfig) -> TextStats:
    """Decide the clip: a read box is text when the same line is read on at least
    `min_text_frames` analysed frames (itself included); a read or glyph-stroked box is
    text when such boxes stand at the same place on at least `min_static_frames` frames.
    Sets each box's final verdict."""
    read = [(f.index, b) for f in frames for b in f.boxes if b.read]
    cands = [(f.index, b) for f in frames for b in f.boxes if b.candidate]
    for _, box in cands:        # a verdict of an earlier call is decided afresh
        box.verdict, box.by = (LONE, "") if box.read else (GLYPHS, "")
    for index, box in read:
        seen_on = {i for i, other in read if same_line(box.poly, other.poly, cfg.min_line_overlap)}
        if len(seen_on | {index}) >= cfg.min_text_frames:
            box.verdict, box.by = TEXT, "read"
    for index, box in cands:
        if box.verdict == TEXT:
            continue
        seen_on = {i for i, other in cands if same_place(box.poly, other.poly, cfg.min_line_overlap)}
        if len(seen_on | {index}) >= cfg.min_static_frames:
            box.by = "read,static" if box.verdict == LONE else "static"
            box.verdict = TEXT
    text_frames = [f for f in frames if any(b.verdict == TEXT for b in f.boxes)]
    line_scores = [b.det_score if b.rec_score is None else b.rec_score
                   for f in frames for b in f.boxes if b.verdict != NOT_A_LINE]
    area = max((sum(_polygon_area(b.poly) for b in f.boxes if b.verdict == TEXT) / f.area
                for f in text_frames), default=0.0)
    evidence = {
        "frames": [int(f.index) for f in frames],
        "boxes": [b.to_json(f.index) for f in frames
                  for b in sorted(f.boxes, key=lambda b: (_VERDICT_ORDER[b.verdict], -b.det_score))
                  [:EVIDENCE_BOXES_PER_FRAME]],
    }
    return TextStats(
        frames=len(frames),
        text_frames=len(text_frames),
        has_text=bool(text_frames),
        max_score=max(line_scores, default=0.0),
        boxes=sum(1 for f in frames for b in f.boxes if b.verdict == TEXT),
        area_fraction=min(1.0, area),
        evidence=evidence,
    )
