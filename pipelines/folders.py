"""What kind of stc folder a path is, so a command given the wrong one says so plainly.

Every command reads the output of an earlier one (curate -> degrade -> train -> enhance ->
eval). Given another command's folder, the reader used to fail deep inside with a message
about keys or files ("unknown key(s) ['discriminator', ...]"); `expect_folder` names what
the folder is and what the command needs instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stc.core.config import ConfigError
from stc.core.names import (
    CHECKPOINTS_DIR,
    CLIP_MANIFEST,
    CURATE_CONFIG,
    ENHANCE_STATS,
    PAIRS_MANIFEST,
    RUN_CONFIG,
)

CURATED, PAIRS, STAGE1, STAGE2, STAGE2_STEP, ENHANCED = (
    "curated", "pairs", "stage1", "stage2", "stage2-step", "enhanced")

DESCRIPTIONS = {
    CURATED: ("a curated folder", "`stc curate VIDEOS --out DIR`"),
    PAIRS: ("a pairs folder", "`stc degrade CURATED --out PAIRS`"),
    STAGE1: ("a Stage I run", "`stc train stage1 --out RUN1`"),
    STAGE2: ("a Stage II run", "`stc train stage2 --out RUN2`"),
    STAGE2_STEP: ("a Stage II run", "`stc train stage2 --out RUN2`"),
    ENHANCED: ("an enhanced-videos folder", "`stc enhance VIDEOS -o DIR`"),
}

# Top-level keys only one stage's config has.
_STAGE1_KEYS = {"discriminator", "perceptual", "model"}
_STAGE2_KEYS = {"transformer", "vqgan"}
# Stage II run folders hold these (model/stage2/runs.py); named here as plain strings so
# telling folders apart never imports torch.
_STAGE2_RUN_FILES = ("curriculum.yaml", "stage2_config.yaml")


def folder_kind(path: str | Path) -> str | None:
    """CURATED, PAIRS, STAGE1, STAGE2, STAGE2_STEP, ENHANCED, or None (not an stc folder,
    or a file)."""
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
        if p.name.startswith("step_") and p.parent.name == CHECKPOINTS_DIR:
            return _config_kind(p / RUN_CONFIG)
        return None
    if p.name in (CLIP_MANIFEST, PAIRS_MANIFEST):     # DIR/manifest.parquet, DIR/pairs.parquet
        return (CURATED if p.name == CLIP_MANIFEST else PAIRS) if p.exists() else None
    if not p.is_dir():
        return None
    if (p / CURATE_CONFIG).exists() or (p / CLIP_MANIFEST).is_dir():
        return CURATED
    if (p / PAIRS_MANIFEST).exists():
        return PAIRS
    if any((p / f).exists() for f in _STAGE2_RUN_FILES):
        return STAGE2
    if (p / ENHANCE_STATS).exists():
        return ENHANCED
    if (p / RUN_CONFIG).exists():
        return _config_kind(p / RUN_CONFIG)
    steps = sorted((p / CHECKPOINTS_DIR).glob("step_*/" + RUN_CONFIG))
    if steps:
        return _config_kind(steps[-1])
    if p.name.startswith("step_") and p.parent.name == CHECKPOINTS_DIR:
        return _config_kind(p / RUN_CONFIG)
    return None


def _config_kind(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    keys = set(data) if isinstance(data, dict) else set()
    if keys & _STAGE2_KEYS:
        return STAGE2_STEP
    if keys & _STAGE1_KEYS:
        return STAGE1
    return None


def expect_folder(path: str | Path, wanted: str | tuple[str, ...], command: str,
                  what: str = "") -> None:
    """Raise ConfigError when `path` is a known stc folder of another kind than `wanted`;
    unknown folders pass (the reader's own checks then speak)."""
    wanted = (wanted,) if isinstance(wanted, str) else wanted
    kind = folder_kind(path)
    if kind is None or kind in wanted:
        return
    have, _ = DESCRIPTIONS[kind]
    need, made_by = DESCRIPTIONS[wanted[0]]
    raise ConfigError(f"{path} is {have}; {command} needs {what or need} (made by {made_by})")
