"""Evaluate one restored video against its ground truth, streaming both once.

Frames are compared at the GT resolution (pred is resized when sizes differ, and the row
says so) over the first min(len) frames, at most `max_frames` (24 by default: the paper's
VFHQ-Test protocol uses the first 24 frames of each clip). Every metric is accumulated frame
by frame, so memory stays at a few frames whatever the length. Any failure becomes a row
with status "error", a reason code and a one-line message naming the file and the place it
failed, never the data involved: evaluation never stops on one video.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from stc.core.video import VideoError, iter_frames, probe, resize_frames
from stc.curation.faces import sample_indices
from stc.model.metrics.config import EvalConfig
from stc.model.metrics.face import FaceMetrics, FaceScores
from stc.model.metrics.flow import endpoint_error, magnitude, make_flow
from stc.model.metrics.fvd import I3DFeatures
from stc.model.metrics.image import channels, psnr, ssim
from stc.model.metrics.lpips import load_lpips

MESSAGE_LIMIT = 300


def error_row(key: str, pred: str | None, gt: str | None, reason: str, message: str) -> dict[str, Any]:
    return {"video": key, "pred_path": pred, "gt_path": gt, "status": "error", "reason": reason,
            "message": message}


def short_error(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """`Type: first line of the message` and where it was raised, at most `limit` characters.

    Library messages can carry whole arguments (pybind11's "Invoked with: array([[...") or
    multi-line dumps; only their first line is kept, and that line is cut, so a message
    never prints frames.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(" Invoked with:")[0]
    if len(text) > limit:
        text = text[:limit] + "..."
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{type(exc).__name__}: {text}{where}"


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


class VideoEvaluator:
    """Holds the metric models (loaded once) and evaluates pairs of videos.

    `__call__` returns (row, info): the EVAL_SCHEMA row and {"seconds": time taken,
    "fvd": {"pred": [[...]], "gt": [[...]]} I3D features per clip, or None without FVD
    weights}. Timings stay out of the row so the same inputs give the same table.
    """

    def __init__(self, cfg: EvalConfig | None = None):
        self.cfg = cfg = cfg or EvalConfig()
        self.faces = FaceMetrics(cfg.face) if cfg.faces_on else None
        self.flow = make_flow(cfg.raft, cfg.flow_max_side)
        self.lpips = None
        if cfg.lpips:
            self.lpips = load_lpips(cfg.lpips, cfg.lpips_backbone)
        self.i3d = None
        if cfg.fvd:
            self.i3d = I3DFeatures(cfg.fvd, cfg.fvd_clip_frames, cfg.fvd_size)

    def __call__(self, key: str, pred_path: str | None, gt_path: str | None,
                 seconds_per_clip: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if not pred_path or not Path(pred_path).exists():
            return error_row(key, pred_path, gt_path, "missing_pred",
                             f"no prediction for {key}: expected {pred_path or key + '.*'}; "
                             "run the enhancement on this video or remove its GT"), {"seconds": 0.0, "fvd": None}
        if not gt_path or not Path(gt_path).exists():
            return error_row(key, pred_path, gt_path, "missing_gt",
                             f"{pred_path} has no GT video with the stem {key!r}; add it or remove the pred"), \
                {"seconds": 0.0, "fvd": None}
        t0 = time.perf_counter()
        fvd = None
        try:
            row, fvd = self._evaluate(key, pred_path, gt_path)
            if row["status"] == "ok":
                row["seconds_per_clip"] = seconds_per_clip
        except VideoError as exc:
            row = error_row(key, pred_path, gt_path, "unreadable", str(exc)[:2 * MESSAGE_LIMIT])
        except Exception as exc:  # noqa: BLE001 - one bad pair must not end the run
            row = error_row(key, pred_path, gt_path, "internal_error",
                            f"evaluating {pred_path} against {gt_path} failed: {short_error(exc)}")
        return row, {"seconds": round(time.perf_counter() - t0, 3), "fvd": fvd}

    def face_frames(self, pred_path: str, gt_path: str) -> set[int] | None:
        """Indices of the frames the face metrics look at (None: every k-th, see config)."""
        cfg = self.cfg
        if cfg.face_stride is not None:
            return None
        gt = probe(gt_path)
        n = min(probe(pred_path).num_frames or gt.num_frames, gt.num_frames)
        if cfg.max_frames:
            n = min(n, cfg.max_frames)
        return set(sample_indices(max(n, 1), gt.fps, cfg.face_sampling))

    def _evaluate(self, key: str, pred_path: str, gt_path: str) -> tuple[dict[str, Any], dict | None]:
        cfg = self.cfg
        notes: list[str] = []
        psnrs, ssims, psnrs_y, ssims_y, lpipses = [], [], [], [], []
        flow_pred, flow_gt, epes = [], [], []
        faces = FaceScores()
        face_at = self.face_frames(pred_path, gt_path) if self.faces is not None else set()
        fvd_feats: dict[str, list] = {"pred": [], "gt": []}
        fvd_buf: dict[str, list] = {"pred": [], "gt": []}
        prev: tuple[np.ndarray, np.ndarray] | None = None
        last_gt: np.ndarray | None = None
        resized = False
        limit = cfg.max_frames or None

        def wanted(i: int) -> bool:
            return limit is None or i < limit

        n, hit_limit = 0, False
        pred_it, gt_it = iter_frames(pred_path, want=wanted), iter_frames(gt_path, want=wanted)
        while True:
            if limit is not None and n >= limit:
                hit_limit = True
                break
            p, g = next(pred_it, None), next(gt_it, None)
            if p is None or g is None:
                break
            pred, gt = p[1], g[1]
            if pred.shape != gt.shape:
                if not resized:
                    notes.append(f"pred {pred.shape[1]}x{pred.shape[0]} resized to the GT's "
                                 f"{gt.shape[1]}x{gt.shape[0]}")
                resized = True
                pred = resize_frames(pred, gt.shape[1], gt.shape[0])
            a, b = channels(pred, cfg.color), channels(gt, cfg.color)
            psnrs.append(psnr(a, b, cfg.psnr_cap))
            ssims.append(ssim(a, b))
            if cfg.color == "y":
                psnrs_y.append(psnrs[-1])
                ssims_y.append(ssims[-1])
            else:
                ay, by = channels(pred, "y"), channels(gt, "y")
                psnrs_y.append(psnr(ay, by, cfg.psnr_cap))
                ssims_y.append(ssim(ay, by))
            if self.faces is not None and (n in face_at if face_at is not None
                                           else n % cfg.face_stride == 0):
                self.faces.add(faces, pred, gt)
            if self.lpips is not None and n % cfg.lpips_stride == 0:
                lpipses.append(self.lpips.distance(pred, gt))
            if prev is not None:
                fp, fg = self.flow(prev[0], pred), self.flow(prev[1], gt)
                flow_pred.append(magnitude(fp))
                flow_gt.append(magnitude(fg))
                epes.append(endpoint_error(fp, fg))
            prev = (pred, gt)
            last_gt = gt
            if self.i3d is not None:
                for side, img in (("pred", pred), ("gt", gt)):
                    fvd_buf[side].append(self.i3d.prepare(img))
                if len(fvd_buf["gt"]) == cfg.fvd_clip_frames:
                    for side in fvd_buf:
                        fvd_feats[side].append(self.i3d(fvd_buf[side]).tolist())
                        fvd_buf[side] = []
            n += 1
        # Both videos are decoded to their ends (without colour conversion past the compared
        # frames), so their lengths, and any corruption there, are known.
        if hit_limit:
            n_pred, n_gt = n + sum(1 for _ in pred_it), n + sum(1 for _ in gt_it)
        else:   # one side ran out; the other's frame in hand counts too
            n_pred = n + (1 + sum(1 for _ in pred_it) if p is not None else 0)
            n_gt = n + (1 + sum(1 for _ in gt_it) if g is not None else 0)
        if n == 0:
            empty = pred_path if n_pred == 0 else gt_path
            return error_row(key, pred_path, gt_path, "no_frames", f"{empty}: no decodable frames"), None
        if n_pred != n_gt:
            notes.append(f"pred has {n_pred} frames, GT {n_gt}: compared the first {n}")
        h, w = last_gt.shape[:2]
        row = {
            "video": key, "pred_path": pred_path, "gt_path": gt_path, "status": "ok", "reason": "ok",
            "message": "; ".join(notes), "frames": n, "pred_frames": n_pred, "gt_frames": n_gt,
            "width": w, "height": h, "resized": resized, "color": cfg.color,
            "psnr": _mean(psnrs), "ssim": _mean(ssims), "lpips": _mean(lpipses),
            "flow_score": _mean(flow_pred), "psnr_y": _mean(psnrs_y), "ssim_y": _mean(ssims_y),
            "flow_epe": _mean(epes), "flow_score_gt": _mean(flow_gt), "flow_method": self.flow.name,
            **faces.result(),
        }
        return row, (fvd_feats if self.i3d is not None else None)


def evaluate_pair(pred_path: str | Path, gt_path: str | Path, cfg: EvalConfig | None = None,
                  evaluator: VideoEvaluator | None = None, key: str | None = None,
                  seconds_per_clip: float | None = None) -> dict[str, Any]:
    """Metrics of one pred video against its GT as a flat row of EVAL_SCHEMA (never raises
    for bad videos: they give status "error"). Pass `evaluator` to reuse loaded models."""
    ev = evaluator or VideoEvaluator(cfg)
    key = key or Path(gt_path).stem
    return ev(key, str(pred_path), str(gt_path), seconds_per_clip)[0]
