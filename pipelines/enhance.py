"""`stc enhance`: restore face videos with a trained Stage II model.

    stc enhance IN.mp4 -o OUT.mp4 --checkpoint RUN2
    stc enhance DIR_OR_LIST... -o OUT_DIR --checkpoint RUN2 [--workers N]

A video of any length is cut into chunks of the T frames the model was trained on; a last
chunk shorter than T is run as the last T frames of the video (so it sees real context) and
only its new frames are kept; a video shorter than T is padded by repeating its last frame.
Frames are resized to the trained resolution (the longer side, rounded to a multiple of 8,
for non-square input) and written there with libx264, at the input's frame rate and with
its audio copied. Several videos go through a pool of Ray actors, one model per actor.
`OUT_DIR/enhance_stats.json` records the model time per 24-frame clip (the paper's unit,
whatever T is), which `stc eval` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stc.core.fs import write_text_atomic
from stc.core.names import ENHANCE_STATS
from stc.core.runtime import RayOptions
from stc.core.video import FrameWriter, iter_frames, probe, resize_frames
from stc.pipelines.driver import Pipeline, run_pipeline
from stc.pipelines.inputs import gather_inputs
from stc.pipelines.options import add_ray_args, positive_int


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def output_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the longer side `size` and both sides multiples of `multiple`."""
    scale = size / max(width, height)
    snap = lambda v: max(multiple, int(round(v * scale / multiple)) * multiple)  # noqa: E731
    return snap(width), snap(height)


class Enhancer:
    """A loaded Stage II model that restores whole videos chunk by chunk."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", crf: float = 18,
                 preset: str = "medium", pix_fmt: str = "yuv420p"):
        from stc.model.stage2.model import load_stage2

        self.device = pick_device(device)
        self.model, self.cfg = load_stage2(checkpoint, self.device)
        self.checkpoint = str(checkpoint)
        self.T, self.size = self.cfg.data.num_frames, self.cfg.data.size
        self.multiple = self.cfg.vqgan.spatial_factor
        self.crf, self.preset, self.pix_fmt = crf, preset, pix_fmt

    def _run(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        import torch

        from stc.core.tensors import to_tensor, to_uint8

        x = to_tensor(np.stack(frames))[None].to(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = self.model.restore(x)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return list(to_uint8(y[0])), time.perf_counter() - t0

    def enhance(self, src: str | Path, dst: str | Path,
                on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Restore `src` into `dst`; returns frames, chunks and model seconds."""

        info = probe(src)
        w, h = output_size(info.width, info.height, self.size, self.multiple)
        T = self.T
        stats = {"frames": 0, "chunks": 0, "model_seconds": 0.0}

        def run(chunk: list[np.ndarray], keep: slice) -> None:
            out, seconds = self._run(chunk)
            for f in out[keep]:
                writer.write(f)
            stats["chunks"] += 1
            stats["model_seconds"] += seconds
            if on_chunk:
                on_chunk(1)

        with FrameWriter(dst, w, h, info.fps, crf=self.crf, preset=self.preset,
                         pix_fmt=self.pix_fmt, audio_from=src) as writer:
            buf: list[np.ndarray] = []
            prev: list[np.ndarray] | None = None
            for _, frame in iter_frames(src):
                buf.append(resize_frames(frame, w, h))
                stats["frames"] += 1
                if len(buf) == T:
                    run(buf, slice(None))
                    prev, buf = buf, []
            if buf:
                r = len(buf)
                if prev is not None:
                    run(prev[r:] + buf, slice(T - r, None))
                else:
                    run(buf + [buf[-1]] * (T - r), slice(0, r))
        # The paper reports seconds per 24-frame clip whatever T the model was trained on.
        stats["seconds_per_chunk"] = stats["model_seconds"] / max(1, stats["chunks"])
        stats["seconds_per_clip"] = stats["model_seconds"] * 24 / max(1, stats["chunks"] * T)
        stats.update(chunk_frames=T, width=w, height=h, fps=info.fps, source=str(src))
        return stats


class EnhanceWorker:
    """Ray actor (or the in-process worker): one model, many videos."""

    def __init__(self, checkpoint: str, device: str, crf: float, preset: str):
        self.enhancer = Enhancer(checkpoint, device, crf, preset)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        stats = self.enhancer.enhance(item["src"], item["dst"])
        return {"rows": [{"src": item["src"], "dst": item["dst"], "status": "ok", "message": "",
                          "stats": stats}]}


def _write_stats(out_dir: Path, enhancer_info: dict[str, Any], videos: dict[str, Any]) -> None:
    path = out_dir / ENHANCE_STATS
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old.get("videos", {}), **videos}
    ok = [v for v in merged.values() if v.get("chunks")]
    frames = sum(v["chunks"] * v["chunk_frames"] for v in ok)
    summary = {**enhancer_info, "videos": merged,
               "seconds_per_clip": (sum(v["model_seconds"] for v in ok) * 24 / frames
                                    if frames else None)}
    write_text_atomic(path, json.dumps(summary, indent=2))


def run_enhance(inputs: list[str], out: str | Path, checkpoint: str | Path, device: str = "auto",
                crf: float = 18, preset: str = "medium", workers: int | None = None,
                address: str | None = None, num_cpus: int | None = None,
                overwrite: bool = False, progress: bool = True,
                verbose: bool = False) -> dict[str, Any]:
    """Restore one video into the file `out`, or several into the folder `out`."""
    sources = [p for p, _ in gather_inputs(inputs)]
    if not sources:
        raise FileNotFoundError(f"no videos found in {inputs}")
    out = Path(out)
    single = len(sources) == 1 and out.suffix.lower() in (".mp4", ".mkv", ".mov")
    out_dir = out.parent if single else out
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [{"src": s, "dst": str(out if single else out / (Path(s).stem + ".mp4"))} for s in sources]
    done = {} if overwrite else {j["dst"]: "ok" for j in jobs if Path(j["dst"]).exists()}
    if done:
        print(f"stc enhance: {len(done)} output(s) exist already, skipping them "
              "(--overwrite to redo)", file=sys.stderr)
    info = {"checkpoint": str(checkpoint), "device": pick_device(device)}
    gpu = 1 if info["device"].startswith("cuda") else 0
    pipeline = Pipeline(
        name="enhance", unit="video", out=out_dir, worker=EnhanceWorker,
        worker_kwargs={"checkpoint": str(checkpoint), "device": device, "crf": crf,
                       "preset": preset}, key="dst",
        to_rows=lambda item, payload: payload["rows"],
        error_rows=lambda item, msg: [{"src": item["src"], "dst": item["dst"], "status": "error",
                                       "message": msg, "stats": {}}],
        num_gpus=gpu, in_process=len(jobs) - len(done) <= 1 and not workers,
        loading="loading the Stage II model")
    report = run_pipeline(pipeline, jobs, done, ray=RayOptions(address, num_cpus, verbose),
                          workers=workers, progress=progress)
    results = {Path(r["dst"]).stem: r["stats"] for r in report.collected if r["status"] == "ok"}
    errors = {r["src"]: r["message"] for r in report.collected if r["status"] != "ok"}
    if results:
        first = next(iter(results.values()))
        info.update(chunk_frames=first.get("chunk_frames"))
        _write_stats(out_dir, info, results)
    for src, msg in errors.items():
        print(f"stc enhance: {src}: {msg}", file=sys.stderr)
    return {"outputs": [j["dst"] for j in jobs], "done": len(results), "errors": errors,
            "stats": str(out_dir / ENHANCE_STATS)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enhance", help="restore face videos with a trained Stage II model",
        description="Restore videos chunk by chunk with a Stage II run (`stc train stage2`), "
                    "keeping fps and audio. One video: -o OUT.mp4; several: -o OUT_DIR.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders, globs or .txt lists")
    p.add_argument("-o", "--out", required=True, help="output .mp4 (one input) or folder")
    p.add_argument("--checkpoint", required=True,
                   help="Stage II run folder (its last curriculum step), step folder or checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--crf", type=float, default=18, help="libx264 CRF of the output (default 18)")
    p.add_argument("--preset", default="medium", help="libx264 preset (default medium)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="Ray actors for several videos (default: one per CPU, or per GPU)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    summary = run_enhance(args.inputs, args.out, args.checkpoint, args.device, args.crf,
                          args.preset, args.workers, args.address, args.num_cpus, args.overwrite,
                          verbose=args.verbose)
    print(json.dumps(summary, indent=2))
    return 1 if summary["errors"] else 0
