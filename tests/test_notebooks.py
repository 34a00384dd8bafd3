"""The notebooks in notebooks/ run headless (nbclient, this Python as the kernel) on
manifests the tests build, and fail the suite on any error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from stc.audit.notebook import NotebookError, run_notebook, tail_strips, video_for
from stc.audit.stats import load_clip_manifest
from stc.model.stage1.config import load_stage1_config
from stc.model.stage1.vqgan3d import VQGAN3D
from stc.model.training.checkpoint import save_checkpoint

from tests.conftest import ROOT, noise_video
from tests.test_stats import REASON_PLAN, write_clip_manifest, write_pairs_manifest

# What the default manifest of write_clip_manifest holds, by source.
PLAN_ROWS = {src: sum(r.values()) for src, r in REASON_PLAN.items()}
PLAN_KEPT = sum(r.get("kept", 0) for r in REASON_PLAN.values())

NOTEBOOKS = ROOT / "notebooks"


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {}) or o.get("output_type") == kind]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    video = noise_video(root / "noise.mp4", frames=12, size=64)
    rows = write_clip_manifest(root / "cur", video=video)
    write_pairs_manifest(root / "pairs.parquet", [r["clip_id"] for r in rows if r["status"] == "kept"])
    write_clip_manifest(root / "other", {"vox": {"kept": 4, "text": 1}}, seed=3)
    return root


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


def test_audit_notebook(datasets, tmp_path):
    nb = run_notebook(NOTEBOOKS / "audit_dataset.ipynb",
                      {"MANIFEST": str(datasets / "cur"), "PAIRS": str(datasets / "pairs.parquet"),
                       "TAIL_METRICS": ["side_ratio"], "TAIL_N": 1},
                      out_path=tmp_path / "audit.ipynb", timeout=300)
    assert not _outputs(nb, "error")
    # funnel, overview, per-source, tail strips, parameters
    assert len(_outputs(nb, "image/png")) == 5
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert f"{sum(PLAN_ROWS.values())} rows, {PLAN_KEPT} kept" in text and "'ok':" in text
    assert (tmp_path / "audit.ipynb").exists()


@pytest.mark.parametrize("second", [True, False], ids=["two-manifests", "sources-of-one"])
def test_compare_notebook(datasets, second):
    params = {"MANIFEST_A": str(datasets / "cur"), "METRIC": "motion_intensity"}
    if second:
        params["MANIFEST_B"] = str(datasets / "other")
    nb = run_notebook(NOTEBOOKS / "compare_sources.ipynb", params, timeout=300)
    assert len(_outputs(nb, "image/png")) == 2
    groups = next(o for o in _outputs(nb, "execute_result") if "text/plain" in o["data"]
                  and "{" in o["data"]["text/plain"])["data"]["text/plain"]
    expected = {"cur": sum(PLAN_ROWS.values()), "other": 5} if second else PLAN_ROWS
    assert groups == str(expected)


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    """A randomly initialised tiny Stage I model saved through the model's own checkpoint code."""
    import torch

    torch.manual_seed(0)
    cfg = load_stage1_config("stage1-tiny")
    model = VQGAN3D(cfg.model)
    run = tmp_path_factory.mktemp("stage1")
    save_checkpoint(run, 0, {"model": model.state_dict(), "ema": model.state_dict()}, {}, cfg)
    return run, cfg


def test_codebook_notebook(datasets, stage1_run):
    run, cfg = stage1_run
    nb = run_notebook(NOTEBOOKS / "codebook_usage.ipynb",
                      {"CHECKPOINT": str(run), "MANIFEST": str(datasets / "cur"), "MAX_CLIPS": 4,
                       "WINDOWS_PER_CLIP": 2},
                      timeout=300)
    assert len(_outputs(nb, "image/png")) == 1
    # 4 of the 9 kept clips (12 frames), 2 windows of T frames each, t*h*w latent positions each
    m = cfg.model
    positions = (cfg.data.num_frames // m.temporal_factor) * (cfg.data.size // m.spatial_factor) ** 2
    table = next(o["data"]["text/plain"] for o in _outputs(nb, "execute_result")
                 if "perplexity" in o["data"].get("text/plain", ""))
    assert table.count(f" {4 * 2 * positions} ") == 2, table        # tokens of C_S and C_T
    assert "C_S" in table and "C_T" in table


def test_tail_strips_tolerate_missing_files(tmp_path):
    video = noise_video(tmp_path / "v.mp4", frames=10, size=48)
    write_clip_manifest(tmp_path / "cur", {"s": {"kept": 3, "side_face": 1}}, video=video,
                        missing=("s_kept_2",))
    m = load_clip_manifest(tmp_path / "cur")
    row = m.df.set_index("clip_id").loc["s_kept_2"].to_dict()
    assert video_for({**row, "clip_id": "s_kept_2"}, m.root) is None
    fig = tail_strips(m.df, "side_ratio", m.root, n=4, frames=3, height=32)
    axes = fig.get_axes()
    assert len(axes) == 8                                  # 4 rows with a side ratio, both ends
    shown = [bool(ax.images) for ax in axes]
    missing = [any("no frames" in t.get_text() for t in ax.texts) for ax in axes]
    assert sum(missing) == 2 and sum(shown) == 6           # s_kept_2 appears at both ends
    assert all(a != b for a, b in zip(shown, missing))
    strip = axes[shown.index(True)].images[0].get_array()
    assert strip.shape == (32, 3 * 32, 3)


def test_failing_cell_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("X = 1"),
                                         nbformat.v4.new_code_cell("assert X == 1, 'boom'")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / "fail.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookError, match="boom"):
        run_notebook(path, {"X": 2}, timeout=120)
