"""Every file and folder name stc writes or looks for, in one table.

Pipelines, readers, the audit and the tests all name on-disk things through these constants,
so a layout change is one edit here.
"""

# stc curate OUT/
CLIP_MANIFEST = "manifest.parquet"      # the curated clips (manifests.clips.CLIP_SCHEMA)
CLIPS_DIR = "clips"                     # the cropped clips, relative paths in the manifest
SHOTS_DIR = "shots"                     # per source: every shot found (start, end, score), JSON
CURATE_CONFIG = "curate_config.yaml"    # the resolved curation config of the folder
RUN_STATS = "run_stats.json"            # the last run's summary and per-step times

# stc degrade OUT/
PAIRS_MANIFEST = "pairs.parquet"        # one row per pair (manifests.pairs.PAIRS_SCHEMA)
SHARDS_DIR = "shards"                   # Parquet shards of the pairs, per recipe and seed
RUNS_DIR = "runs"                       # settings and stats of each recipe/seed run
PAIRS_LQ_DIR = "lq"                     # --format mp4: one LQ video per pair...
PAIRS_GT_DIR = "gt"                     # ...and its GT, same file name (stc eval pairs them)

# stc enhance OUT_DIR/
ENHANCE_STATS = "enhance_stats.json"    # model seconds per 24-frame clip, read by stc eval

# written into every output folder while a run holds it
LOCK_FILE = ".stc.lock"
LOG_FILE = "stc.log"                    # Ray's own messages, out of the console

# training runs
CHECKPOINTS_DIR = "checkpoints"
RUN_CONFIG = "config.yaml"              # a training run's resolved config
TRAIN_STATE = "state.safetensors"       # optimizer and step state of a checkpoint
TRAIN_STATE_META = "state.json"         # the non-tensor part of that state
LEGACY_TRAIN_STATE = "state.pt"         # pickled state of stc 0.1 runs: refused, never loaded
