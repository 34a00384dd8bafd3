"""Helpers for the audit notebooks: run one headless with parameters, and show clips as
frame strips.

`run_notebook` follows papermill's convention without depending on it: the cell tagged
`parameters` holds the defaults, and a cell inserted right after it overrides them. The
kernel is always the Python running this code (a kernelspec written to a temporary
folder), so CI never depends on which Jupyter kernels happen to be installed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from stc.audit.stats import METRICS_BY_NAME, tail_rows
from stc.core.extras import need
from stc.core.fs import atomic_path
from stc.core.video import VideoError, decode_sampled, probe

KERNEL_NAME = "stc-python"


class NotebookError(RuntimeError):
    """A notebook cell raised: the message names the notebook and the failing cell."""


def parameters_cell_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise NotebookError("the notebook has no cell tagged 'parameters' to override")


def inject_parameters(nb, parameters: Mapping[str, Any]) -> None:
    """Insert `NAME = value` lines (Python literals) after the parameters cell."""
    import nbformat

    lines = ["# Parameters injected by manifests.notebook.run_notebook"]
    lines += [f"{k} = {v!r}" for k, v in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters_cell_index(nb) + 1, cell)


def _kernel_manager(spec_dir: Path):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    d = spec_dir / KERNEL_NAME
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stc (this Python)", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def run_notebook(path: str | Path, parameters: Mapping[str, Any] | None = None,
                 out_path: str | Path | None = None, timeout: int = 600,
                 cwd: str | Path | None = None):
    """Execute a notebook headless; returns the executed notebook, also written to
    `out_path` when given. Raises NotebookError on the first failing cell."""
    need("nbclient", "notebooks", "running the audit notebooks")
    need("ipykernel", "notebooks", "running the audit notebooks")
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    with tempfile.TemporaryDirectory(prefix="stc-kernel-") as spec_dir:
        km = _kernel_manager(Path(spec_dir))
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL_NAME,
                                resources={"metadata": {"path": str(cwd or path.parent)}})
        try:
            client.execute()
        except CellExecutionError as exc:
            if out_path:
                _write(nb, out_path)
            raise NotebookError(f"{path}: a cell failed:\n{exc}") from None
    if out_path:
        _write(nb, out_path)
    return nb


def _write(nb, out_path: str | Path) -> None:
    import nbformat

    with atomic_path(out_path, suffix=".ipynb") as tmp:
        nbformat.write(nb, str(tmp))


# --- frame strips --------------------------------------------------------------------
def video_for(row: Mapping[str, Any], root: str | Path) -> Path | None:
    """The written clip of a kept row (relative to the manifest folder), else the source
    video; None when neither file exists."""
    clip = row.get("clip_path")
    if isinstance(clip, str) and clip and (Path(root) / clip).is_file():
        return Path(root) / clip
    src = row.get("source_path")
    if isinstance(src, str) and src and Path(src).is_file():
        return Path(src)
    return None


def frame_strip(path: str | Path, frames: int = 4, height: int = 128) -> np.ndarray:
    """`frames` frames spread over the video, resized to `height` and set side by side."""
    import cv2

    info = probe(path)
    # Some containers do not store a frame count: estimate it from fps and duration.
    total = max(int(info.num_frames or round(info.fps * info.duration) or 1), 1)
    wanted = {int(i) for i in np.linspace(0, total - 1, frames).round()}
    got: dict[int, np.ndarray] = {}
    decode_sampled(path, wanted, lambda i, img: got.__setitem__(i, img), include_last=False)
    images = []
    for i in sorted(got):
        img = got[i]
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        images.append(cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA))
    if not images:
        raise ValueError(f"{path}: no frame could be decoded")
    return np.concatenate(images, axis=1)


def tail_strips(df: pd.DataFrame, metric: str, root: str | Path, n: int = 2, frames: int = 4,
                height: int = 96):
    """A figure: the `n` lowest and `n` highest clips of a metric as frame strips.

    A missing or undecodable file shows its reason instead of frames, so an audit of
    a moved dataset still runs.
    """
    from matplotlib.figure import Figure

    low, high = tail_rows(df, metric, n)
    rows = [("lowest", r) for r in low.to_dict("records")] + \
           [("highest", r) for r in high.to_dict("records")]
    fig = Figure(figsize=(frames * 1.6, 1.7 * max(len(rows), 1)))
    axes = fig.subplots(max(len(rows), 1), 1, squeeze=False)
    for ax, (which, row) in zip(axes[:, 0], rows):
        ax.set_xticks([])
        ax.set_yticks([])
        title = f"{which} {row['_value']:.4g}: {row['clip_id']} ({row['status']}/{row['reason']})"
        ax.set_title(title, fontsize=8, loc="left")
        path = video_for(row, root)
        try:
            if path is None:
                raise FileNotFoundError("video file missing")
            ax.imshow(frame_strip(path, frames, height))
        except (FileNotFoundError, VideoError, ValueError) as exc:
            ax.text(0.5, 0.5, f"no frames: {exc}"[:120], ha="center", va="center", fontsize=8,
                    color="0.4", transform=ax.transAxes)
    if not rows:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, f"no clip has a {metric} value", ha="center")
    fig.suptitle(METRICS_BY_NAME[metric].label, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig
