"""Stage II started from a trained Stage II model (`stc train stage2 --init RUN`).

The first curriculum step then starts from RUN's weights instead of a Stage I run: an
imported release (`stc weights import`, e.g. the authors' ckpt-bfvr.pth) or a Stage II run
stc trained (a curriculum run folder, one of its steps, or a checkpoint). What trains is what
always trains in Stage II: the LQ encoder and the two lookup transformers (position
embeddings, layers, logit heads); the Stage I model inside it (codebooks, the temporal
attention SA2, the generator, and the HQ encoder that makes the targets) stays frozen, as the
authors' `CodeFormer3D(fix_modules=['quantize', 'generator'])` with its separate frozen
Stage I network does.

The run's config has two sources:
  - the network (`transformer` except dropout, `vqgan`, `data.size`, and `data.num_frames`
    where the position embedding spans time) is RUN's, since its weights only fit it; for an
    imported release that includes the authors' scrambled motion residual
    (`transformer.motion_residual: authors_layout`), which those weights were trained with;
  - the training settings (losses, optimiser, schedule, batch, EMA, data but the size) are
    the `--config` the user names, by default RUN's own: for an import, the preset of its
    variant (`stage2`, `stage2-deflicker`, `stage2-deflickersd`) as the import wrote it.
The curriculum is the user's (`finetune-bfvr`: the authors' bfvr_2 step alone).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from stc.core import storage
from stc.core.config import ConfigError, load_config
from stc.model.stage2.config import Stage2Config
from stc.model.stage2.runs import (
    CONFIG_FILE,
    INIT_FILE,
    MANIFEST_FILE,
    STAGE1_FILE,
    final_step_dir,
    stage1_manifest,
)
from stc.model.training.checkpoint import CONFIG_FILE as CKPT_CONFIG
from stc.model.training.checkpoint import resolve_checkpoint

# Imported runs hold this beside their checkpoints (stc.model.authors.PROVENANCE_FILE; named
# here so reading a run's origin does not import the importer).
PROVENANCE_FILE = "provenance.json"


@dataclass
class InitRun:
    path: Path                 # as given, expanded
    checkpoint: Path           # the checkpoint folder its weights come from
    network: Stage2Config      # the config those weights were trained (or imported) with
    training: Stage2Config     # its training settings: the run's, or the checkpoint's
    provenance: dict | None    # what `stc weights import` recorded; None for stc's own runs


def load_init(path: str | Path) -> InitRun:
    """The Stage II model `--init` names, without loading its weights."""
    import json

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"--init {path}: no such run folder or checkpoint")
    if path.is_file() and path.suffix in (".pth", ".pt"):
        raise ConfigError(f"--init {path}: a PyTorch file; import it into a run folder first "
                          f"(`stc weights import {path} --out RUN`) and give --init RUN")
    step = final_step_dir(path)
    try:
        ckpt = resolve_checkpoint(step if step is not None else path)
    except FileNotFoundError as exc:
        raise ConfigError(f"--init {path}: {exc}") from None
    try:
        network = load_config(Stage2Config, ckpt / CKPT_CONFIG)
    except ConfigError as exc:
        raise ConfigError(f"--init {path} is not a Stage II model ({exc}); give an imported "
                          "run (`stc weights import`) or a Stage II run (`stc train stage2`); "
                          "a Stage I run goes to --stage1") from None
    run_cfg = path / CONFIG_FILE
    training = load_config(Stage2Config, run_cfg) if run_cfg.exists() else copy.deepcopy(network)
    prov = path / PROVENANCE_FILE
    if not prov.exists() and ckpt.parent.name == "checkpoints":
        prov = ckpt.parent.parent / PROVENANCE_FILE
    return InitRun(path, ckpt, network, training,
                   json.loads(prov.read_text()) if prov.exists() else None)


def init_config(init: InitRun, chosen: Stage2Config | None = None) -> Stage2Config:
    """`chosen`'s training settings (default: the init run's) on the init run's network."""
    cfg = copy.deepcopy(chosen if chosen is not None else init.training)
    net = init.network
    dropout = cfg.transformer.dropout
    cfg.transformer = copy.deepcopy(net.transformer)
    cfg.transformer.dropout = dropout
    cfg.vqgan = copy.deepcopy(net.vqgan)
    cfg.data.size = net.data.size          # the (h*w) position grid
    if net.transformer.attention == "clip":  # its (t*h*w) grid spans time too
        cfg.data.num_frames = net.data.num_frames
    cfg.check_against(cfg.vqgan)
    return cfg


def network_differs(init: InitRun, cfg: Stage2Config) -> list[str]:
    """The network settings where `cfg` departs from the init run's (empty when it fits)."""
    a, b = init_config(init, cfg), cfg
    out = []
    for part in ("transformer", "vqgan"):
        x, y = vars(getattr(a, part)), vars(getattr(b, part))
        out += [f"{part}.{k}: {x[k]!r} -> {y[k]!r}" for k in x if x[k] != y[k]]
    if a.data.size != b.data.size:
        out.append(f"data.size: {a.data.size} -> {b.data.size}")
    if a.data.num_frames != b.data.num_frames:
        out.append(f"data.num_frames: {a.data.num_frames} -> {b.data.num_frames}")
    return out


def init_manifest(init: str | Path) -> Path:
    """The curated manifest a Stage II run trained on (recorded, or that of the Stage I run
    it started from, or of its own --init); an imported release records none."""
    path = Path(init).expanduser()
    for run in (path, path.parent.parent):        # a run folder, or one of its steps
        if (run / MANIFEST_FILE).exists():
            return storage.location((run / MANIFEST_FILE).read_text().strip())
        if (run / STAGE1_FILE).exists():
            return stage1_manifest(Path((run / STAGE1_FILE).read_text().strip()))
        if (run / INIT_FILE).exists():
            return init_manifest((run / INIT_FILE).read_text().strip())
    raise ConfigError(f"--init {init} records no curated manifest (an imported release was "
                      "trained elsewhere); pass --manifest CURATED (the clips to fine-tune on)")
