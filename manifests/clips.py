"""The curated-clip manifest: one row per clip cut from a source video, and exactly one
row for a source that gave no clip, whatever happened to it.

A source is cut at its camera shots; each face track of a shot gives one clip, or several
when it is longer than `max_seconds`. A clip row says where it came from (`source_id`,
`shot_index`, `track_index`, source frames [`start_frame`, `end_frame`) and the same in
seconds); a source-level row has `clip_id == source_id` and no shot. All rows of a source
are written, and replaced, together (the schema's group): resume skips finished sources.

`status` is kept / rejected / error; `reason` is a short code from REASONS (what to group
by in an audit) and `message` the human sentence (which file and frames, what to do). Every
reason belongs to one funnel stage, the first stage the row did *not* pass, which is how
the paper's Table 4(f)-style funnel is counted (over rows: clips and clipless sources).
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from stc.manifests.schema import ManifestSchema

STATUSES = ("kept", "rejected", "error")

# The funnel, in order: a clip that reaches stage i passed every stage before it.
FUNNEL = ("inputs", "decodable", "face", "crop", "frontal", "quality", "no_text", "kept")

# reason -> (status, the funnel stage it fails)
REASONS: dict[str, tuple[str, str]] = {
    "kept": ("kept", ""),
    "unreadable": ("error", "decodable"),      # missing, empty, not a video, corrupt
    "truncated": ("error", "decodable"),       # cut short: fewer frames or bytes than declared
    "too_short": ("rejected", "decodable"),
    "no_face": ("rejected", "face"),
    "face_too_small": ("rejected", "face"),
    "multiple_faces": ("rejected", "face"),
    "crop_too_small": ("rejected", "crop"),
    "low_resolution": ("rejected", "quality"),  # the face holds less detail than its size
    "blurry": ("rejected", "quality"),
    "compressed": ("rejected", "quality"),      # block edges of heavy compression
    "side_face": ("rejected", "frontal"),
    "text": ("rejected", "no_text"),
    "encode_failed": ("error", "kept"),         # analysis passed, writing the clip did not
    "internal_error": ("error", "decodable"),   # a bug: the message has the traceback tail
}

# 2: one row per clip (source_id, shot_index, track_index, start/end frame and time)
# 3: source_hash and duplicate_paths (null in parts written before)
# 4: person_id, embedding, identity_faces, person_distance; identity_id and split (stc split)
CLIP_SCHEMA_VERSION = 4

_fields = [
    ("clip_id", pa.string()),           # source_id_sSSS_tTT_PP; source_id for a clipless source
    ("source_id", pa.string()),         # the input's id: stem and a hash of its path
    ("source_path", pa.string()),
    ("source", pa.string()),            # dataset / source name, for per-source statistics
    # BLAKE2b-256 of the input's bytes (core.content_hash): equal for byte-identical inputs,
    # which are curated once, as the first of them in sorted order
    ("source_hash", pa.string()),
    ("duplicate_paths", pa.string()),   # JSON list of the other inputs with these bytes
    ("status", pa.string()),
    ("reason", pa.string()),
    ("message", pa.string()),
    ("clip_path", pa.string()),         # relative to the manifest's output folder
    # input video
    ("fps", pa.float64()),
    ("num_frames", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("duration", pa.float64()),
    ("codec", pa.string()),
    ("rotation", pa.int32()),
    # where the clip is in its source (null on a source-level row)
    ("shot_index", pa.int32()),         # the camera shot, from 0 (OUT/shots/<source_id>.json)
    ("track_index", pa.int32()),        # the face track within the shot, from 0
    ("start_frame", pa.int64()),        # first source frame of the clip
    ("end_frame", pa.int64()),          # one past its last source frame
    ("start_time", pa.float64()),       # seconds from the source's first frame
    ("end_time", pa.float64()),
    # identity (curation.identity), from dlib's 128-d face descriptor of sampled faces
    ("person_id", pa.string()),         # <source_id>_pNN: one person across the source's shots
    ("embedding", pa.list_(pa.float32())),  # the clip's mean descriptor (128 values)
    ("identity_faces", pa.int32()),     # sampled faces averaged into it
    ("person_distance", pa.float64()),  # euclidean, from the mean of its person's clips
    # `stc split` (null until it ran): identity over all sources, and train / val / test
    ("identity_id", pa.string()),
    ("split", pa.string()),
    # faces (on sampled frames)
    ("sampled_frames", pa.int32()),
    ("face_frame_fraction", pa.float64()),
    ("max_faces", pa.int32()),
    ("multi_face_fraction", pa.float64()),
    ("face_size_median", pa.float64()),  # side of the main face box, input pixels
    # crop, input pixel coordinates (x1, y1 exclusive)
    ("crop_x0", pa.int32()),
    ("crop_y0", pa.int32()),
    ("crop_x1", pa.int32()),
    ("crop_y1", pa.int32()),
    ("face_proportion", pa.float64()),  # median main-face box area / crop area
    # quality gate (curation.quality), medians over the face's sampled frames, source pixels
    ("quality_frames", pa.int32()),
    ("effective_resolution", pa.float64()),  # px of real face detail
    ("sharpness", pa.float64()),         # fine-scale share of band-pass energy, face at 128 px
    ("blockiness", pa.float64()),        # excess luma step at 8x8 block edges, grey levels
    # JSON {"frames", "effective_resolution_sharpness_blockiness": [[px, sharp, block]]}
    ("quality_evidence", pa.string()),
    # side face (paper Sec. 6.1)
    ("landmark_frames", pa.int32()),
    ("side_fraction", pa.float64()),
    ("side_ratio_median", pa.float64()),
    ("side_ratio_min", pa.float64()),
    ("side_ratio_max", pa.float64()),
    # JSON {"frames", "alpha" (null: infinite), "side", "points" [x30,y30,x36,y36,x45,y45]}
    ("side_face_evidence", pa.string()),
    # turned frames (curation.side_face): sampled frames inside the clip judged turned (the
    # eye-nose rule, or the frontal detector missing the tracked face), in short runs only
    ("turned_frames", pa.int32()),
    # JSON [{start, end, frames, why: side|missed|landmarks, trimmed}]: every turned run of
    # the clip's track; the trimmed ones (possibly >= max_turned_seconds) are cut out
    ("turned_runs", pa.string()),
    # text (PP-OCR detection, line shape, recognition, persistence over frames)
    ("ocr_frames", pa.int32()),
    ("has_text", pa.bool_()),
    ("text_score", pa.float64()),       # best recogniser score of a line-shaped box
    ("text_boxes", pa.int32()),         # boxes judged text
    ("text_frames", pa.int32()),        # analysed frames with persistent text
    ("text_area_fraction", pa.float64()),
    # JSON {"frames", "boxes": [{frame, poly (input px), det, text, rec, verdict}]}
    ("text_evidence", pa.string()),
    # motion (paper Sec. 6.2), on the written clip
    ("motion_intensity", pa.float64()),  # mean over frame pairs of changed-pixel fraction
    ("motion_sum", pa.int64()),          # total changed pixels over the clip
    # written clip
    ("clip_size", pa.int32()),
    ("clip_num_frames", pa.int64()),
    ("clip_fps", pa.float64()),
]


def _check_status(row: Mapping[str, Any]) -> str | None:
    status, reason = row["status"], row["reason"]
    if status not in STATUSES:
        return f"status {status!r} is not one of {STATUSES}"
    if reason not in REASONS:
        return f"reason {reason!r} is not one of {sorted(REASONS)}"
    if REASONS[reason][0] != status:
        return f"reason {reason!r} belongs to status {REASONS[reason][0]!r}, not {status!r}"
    return None


def _check_kept(row: Mapping[str, Any]) -> str | None:
    if row["status"] == "kept" and not row["clip_path"]:
        return "kept row without clip_path"
    return None


def _check_span(row: Mapping[str, Any]) -> str | None:
    if row["shot_index"] is None:
        return None         # a source-level row (or one written without shots)
    start, end = row["start_frame"], row["end_frame"]
    if not row["source_id"] or start is None or end is None or not 0 <= start < end:
        return f"clip row without its source_id and frame span ({start}, {end})"
    return None


CLIP_SCHEMA = ManifestSchema(
    name="curated_clips",
    version=CLIP_SCHEMA_VERSION,
    arrow=pa.schema(_fields),
    key="clip_id",
    row_checks=(_check_status, _check_kept, _check_span),
    group="source_id",
    added=frozenset({"source_hash", "duplicate_paths", "person_id", "embedding", "identity_faces",
                     "person_distance", "identity_id", "split"}),
)


def funnel_stage(reason: str) -> str:
    """The funnel stage a row with this reason failed ('' for kept)."""
    return REASONS[reason][1]


def funnel_counts(reasons: list[str]) -> dict[str, int]:
    """How many rows reached each funnel stage."""
    failed_at = [funnel_stage(r) for r in reasons]
    counts = {}
    for i, stage in enumerate(FUNNEL):
        # A row reached stage i unless it failed at stage i or earlier.
        earlier = set(FUNNEL[1:i + 1])
        counts[stage] = sum(1 for f in failed_at if f not in earlier)
    return counts


def source_counts(rows) -> dict[str, int]:
    """The source side of the funnel, from a manifest DataFrame: sources, sources that gave
    at least one clip row, sources with a kept clip, and clip rows."""
    if len(rows) == 0:
        return {"sources": 0, "with_clips": 0, "with_kept": 0, "clips": 0}
    is_clip = rows["clip_id"] != rows["source_id"]
    kept = rows["status"] == "kept"
    return {"sources": int(rows["source_id"].nunique()),
            "with_clips": int(rows.loc[is_clip, "source_id"].nunique()),
            "with_kept": int(rows.loc[kept, "source_id"].nunique()),
            "clips": int(is_clip.sum())}
