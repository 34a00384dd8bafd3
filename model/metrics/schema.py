"""The `stc eval` result table: one row per (pred, GT) pair, whatever happened to it."""

from __future__ import annotations

import pyarrow as pa

from stc.manifests.schema import ManifestSchema

EVAL_STATUSES = ("ok", "error")
# reason codes of error rows (status ok rows have reason "ok")
EVAL_REASONS = ("ok", "missing_pred", "missing_gt", "ambiguous", "unreadable", "no_frames",
                "internal_error")

# Per-video metrics, in table order; None where a metric was not asked for or not defined.
# The paper's (Sec. 4.1, Table 1) first, then stc's extra variants and references.
PAPER_METRICS = ("psnr", "ssim", "lpips", "akd", "ids", "face_cons", "flow_score")
EXTRA_METRICS = ("psnr_y", "ssim_y", "face_cons_mean", "face_cons_gt", "flow_epe", "flow_score_gt")
METRICS = PAPER_METRICS + EXTRA_METRICS + ("seconds_per_clip",)

EVAL_SCHEMA = ManifestSchema(
    name="stc.eval",
    version=2,
    key="video",
    arrow=pa.schema([
        ("video", pa.string()),          # the file stem pred and GT are paired by
        ("pred_path", pa.string()),
        ("gt_path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),        # errors, and warnings of ok rows (resized, length mismatch)
        ("frames", pa.int64()),          # frame pairs compared: the first min(len, max_frames)
        ("pred_frames", pa.int64()),     # decoded frames of each (the longer one counted to its end)
        ("gt_frames", pa.int64()),
        ("width", pa.int32()),           # GT size: the comparison resolution
        ("height", pa.int32()),
        ("resized", pa.bool_()),         # pred was resized to the GT size
        ("color", pa.string()),          # planes of psnr/ssim: rgb or y
        # --- the paper's metrics (Sec. 4.1) ---
        ("psnr", pa.float64()),          # dB on `color`, mean over frames, identical frames count as psnr_cap
        ("ssim", pa.float64()),          # on `color`
        ("lpips", pa.float64()),         # LPIPS v0.1 (needs weights)
        ("akd", pa.float64()),           # GT pixels
        ("ids", pa.float64()),           # cosine of pred and GT identity embeddings
        ("face_cons", pa.float64()),     # mean cos(emb(x_1), emb(x_t)), t = 2..T, on pred
        ("flow_score", pa.float64()),    # mean flow magnitude of pred alone, pixels
        # --- stc's extra variants and references ---
        ("psnr_y", pa.float64()),        # BT.601 luma (BasicSR test_y_channel)
        ("ssim_y", pa.float64()),
        ("face_cons_mean", pa.float64()),  # stc's earlier Face-Cons: cos to the clip's mean embedding
        ("face_cons_gt", pa.float64()),  # face_cons of GT: the level a perfect restoration reaches
        ("face_frames", pa.int32()),     # frames with a GT face that the face metrics averaged
        ("flow_epe", pa.float64()),      # stc's earlier flow score: EPE of pred's flow vs GT's, pixels
        ("flow_score_gt", pa.float64()),  # flow_score of GT: the content's own motion
        ("flow_method", pa.string()),    # dis or raft
        ("seconds_per_clip", pa.float64()),  # enhancement runtime per 24-frame clip, from the sidecar
    ]),
    row_checks=(
        lambda r: None if r.get("status") in EVAL_STATUSES else f"status {r.get('status')!r} unknown",
        lambda r: None if r.get("reason") in EVAL_REASONS else f"reason {r.get('reason')!r} unknown",
    ),
)
