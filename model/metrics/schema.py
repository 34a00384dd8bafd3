"""The `stc eval` result table: one row per (pred, GT) pair, whatever happened to it."""

from __future__ import annotations

import pyarrow as pa

from stc.manifests.schema import ManifestSchema

EVAL_STATUSES = ("ok", "error")
# reason codes of error rows (status ok rows have reason "ok")
EVAL_REASONS = ("ok", "missing_pred", "missing_gt", "ambiguous", "unreadable", "no_frames",
                "internal_error")

# Per-video metrics, in table order; None where a metric was not asked for or not defined.
METRICS = ("psnr", "ssim", "lpips", "akd", "ids", "face_cons", "face_cons_gt", "flow_epe",
           "seconds_per_clip")

EVAL_SCHEMA = ManifestSchema(
    name="stc.eval",
    version=1,
    key="video",
    arrow=pa.schema([
        ("video", pa.string()),          # the file stem pred and GT are paired by
        ("pred_path", pa.string()),
        ("gt_path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),        # errors, and warnings of ok rows (resized, length mismatch)
        ("frames", pa.int64()),          # frame pairs compared: min of the two lengths
        ("pred_frames", pa.int64()),     # decoded frames of each (the longer one counted to its end)
        ("gt_frames", pa.int64()),
        ("width", pa.int32()),           # GT size: the comparison resolution
        ("height", pa.int32()),
        ("resized", pa.bool_()),         # pred was resized to the GT size
        ("color", pa.string()),          # planes of PSNR/SSIM: y or rgb
        ("psnr", pa.float64()),          # dB, mean over frames, identical frames count as psnr_cap
        ("ssim", pa.float64()),
        ("lpips", pa.float64()),
        ("akd", pa.float64()),           # GT pixels
        ("ids", pa.float64()),
        ("face_cons", pa.float64()),
        ("face_cons_gt", pa.float64()),
        ("face_frames", pa.int32()),     # frames with a GT face that AKD/IDS averaged
        ("flow_epe", pa.float64()),      # GT pixels
        ("flow_method", pa.string()),    # dis or raft
        ("seconds_per_clip", pa.float64()),  # enhancement runtime per 24-frame clip, from the sidecar
    ]),
    row_checks=(
        lambda r: None if r.get("status") in EVAL_STATUSES else f"status {r.get('status')!r} unknown",
        lambda r: None if r.get("reason") in EVAL_REASONS else f"reason {r.get('reason')!r} unknown",
    ),
)
