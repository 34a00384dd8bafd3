"""`stc enhance`: restore the faces of real videos with a trained Stage II model.

    stc enhance IN.mp4 -o OUT.mp4 --checkpoint RUN2 [--upscale 2] [--save-crops]
    stc enhance DIR_OR_LIST... -o OUT_DIR --checkpoint RUN2 [--workers N]
    stc enhance CROPS... -o OUT_DIR --checkpoint RUN2 --aligned
    stc enhance CROP.mp4 -o OUT.mp4 --checkpoint RUN2 --aligned --preset authors

By default the input is a real video of any size, or a folder of frames (`IN/*.png` ->
`OUT/*.png`): the faces are found and tracked shot by shot, each gets a steady per-frame crop,
is restored at the model's size in overlapping T-frame chunks and pasted back through a soft
mask that follows the face (`stc.model.restore.engine`, which this module only drives); the
rest of the frame is the input's, resized by --upscale (or by a user-given TorchScript
upsampler).
With --aligned the input is already a face crop, as `stc curate` writes them: whole frames
are resized to the trained resolution (the longer side, rounded to a multiple of the
model's spatial factor) and restored in chunks of T frames; a last chunk shorter than T is
run as the last T frames (so it sees real context), a video shorter than T is padded by
repeating its last frame. `--aligned --preset authors` instead reproduces the frame handling
of the authors' scripts/infer_bfvr.py (the first 24 frames, squashed to the model's size, one
pass, one min-max over the clip, 24 fps: `stc.model.restore.aligned`), for comparing with
their published outputs.

Either way the output keeps the input's frame rate and audio. Several videos go through a
pool of Ray actors, one model per actor. `OUT_DIR/enhance_stats.json` records the model
time per 24-frame clip (the paper's unit, whatever T is), which `stc eval` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stc.core.config import ConfigError
from stc.core.fs import write_text_atomic
from stc.core.names import ENHANCE_STATS
from stc.core.paths import resolved
from stc.core.runtime import RayOptions
from stc.core.frames import VIDEO_SUFFIXES, count_frames, is_frame_folder
from stc.core.video import X264_PRESETS, FrameWriter, iter_frames, probe, resize_frames
from stc.pipelines.driver import Pipeline, run_pipeline
from stc.model.authors import authors_runner
from stc.model.restore.aligned import enhance_authors
from stc.model.restore.engine import FaceVideoRestorer, OnFrame
from stc.model.restore.options import DETECTOR_DEFAULTS, FaceOptions
from stc.pipelines.folders import STAGE2, STAGE2_STEP, expect_folder
from stc.pipelines.inputs import gather_inputs
from stc.pipelines.options import add_ray_args, non_negative_int, positive_int, print_next

# How aligned inputs are handled: stc's own chunked path, or the authors' inference script.
ALIGNED_PRESETS = ("stc", "authors")


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


def load_upsampler(path: str | Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """A learned background upsampler from the user's TorchScript file: it maps an RGB
    image [1, 3, H, W] in [0, 1] to [1, 3, H*N, W*N] (e.g. Real-ESRGAN exported with
    torch.jit.trace). No architecture code or weights ship with stc."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--bg-upsampler {path} does not exist; give a TorchScript file "
                                "(torch.jit.save of a model mapping [1,3,H,W] in [0,1] to x N)")
    try:
        model = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as exc:
        raise ConfigError(f"--bg-upsampler {path} is not a TorchScript file ({exc}); export the "
                          "model with torch.jit.trace/script and torch.jit.save") from None

    def run(frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = model(x.to(device).float().div_(255))
        y = y[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        return y.cpu().numpy()

    return run


class Enhancer:
    """A loaded Stage II model that restores whole videos: the faces of full frames, or,
    with `faces=None`, aligned face crops chunk by chunk (`aligned_preset="authors"`: as the
    authors' inference script)."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", crf: float = 18,
                 preset: str = "medium", pix_fmt: str = "yuv420p",
                 faces: FaceOptions | None = None, bg_upsampler: str | Path | None = None,
                 aligned_preset: str = "stc"):
        from stc.model.stage2.model import load_stage2

        check_checkpoint(checkpoint)
        self.device = pick_device(device)
        self.model, self.cfg = load_stage2(checkpoint, self.device)
        self.checkpoint = str(checkpoint)
        self.T, self.size = self.cfg.data.num_frames, self.cfg.data.size
        self.multiple = self.cfg.vqgan.spatial_factor
        self.crf, self.preset, self.pix_fmt = crf, preset, pix_fmt
        self.aligned_preset = aligned_preset
        self.faces = None
        if faces is not None:
            upsampler = load_upsampler(bg_upsampler, self.device) if bg_upsampler else None
            self.faces = FaceVideoRestorer(self._run_batch, self.size, self.T, faces, upsampler)

    def _run_batch(self, clips: np.ndarray) -> tuple[np.ndarray, float]:
        """uint8 [B, T, S, S, 3] -> restored uint8, same shape, and the model's seconds."""
        import torch

        from stc.core.tensors import to_tensor, to_uint8

        x = torch.stack([to_tensor(c) for c in clips]).to(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = self.model.restore(x)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return np.stack([to_uint8(c) for c in y]), time.perf_counter() - t0

    def _run(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        out, seconds = self._run_batch(np.stack(frames)[None])
        return list(out[0]), seconds

    def enhance(self, src: str | Path, dst: str | Path,
                on_chunk: Callable[[int], None] | None = None,
                crops_dir: str | Path | None = None,
                on_frame: OnFrame | None = None) -> dict[str, Any]:
        """Restore `src` into `dst`; returns frames, chunks and model seconds. `on_frame`
        follows the full-frame passes frame by frame, `on_chunk` the aligned path."""
        if self.faces is not None:
            stats = self.faces.enhance(src, dst, crf=self.crf, preset=self.preset,
                                       pix_fmt=self.pix_fmt, crops_dir=crops_dir,
                                       on_frame=on_frame)
            clips, frames = stats["crops"], self.T
        elif self.aligned_preset == "authors":
            stats = enhance_authors(authors_runner(self.model, self.device), self.size, src,
                                    dst, crf=self.crf, preset=self.preset, pix_fmt=self.pix_fmt)
            clips, frames = 1, stats["chunk_frames"]
        else:
            stats = self._enhance_aligned(src, dst, on_chunk)
            clips, frames = stats["chunks"], self.T
        # The paper reports seconds per 24-frame clip whatever T the model was trained on.
        stats["model_clips"] = clips
        stats["seconds_per_clip"] = (stats["model_seconds"] * 24 / (clips * frames)
                                     if clips else None)
        return stats

    def _enhance_aligned(self, src: str | Path, dst: str | Path,
                         on_chunk: Callable[[int], None] | None) -> dict[str, Any]:
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
        stats["seconds_per_chunk"] = stats["model_seconds"] / max(1, stats["chunks"])
        stats.update(chunk_frames=T, width=w, height=h, fps=info.fps, source=str(src),
                     mode="aligned")
        return stats


def check_checkpoint(path: str | Path) -> None:
    """A Stage I run (or a curated folder...) given as --checkpoint: say so, not a key error.
    A path that does not exist is refused here, before Ray and its workers start."""
    if not Path(path).expanduser().exists():
        raise ConfigError(f"{path}: no such checkpoint; give a Stage II run folder (made by "
                          "`stc train stage2` or `stc weights import`), one of its checkpoint "
                          "folders, or a .safetensors file inside one")
    expect_folder(path, (STAGE2, STAGE2_STEP), "stc enhance")


class EnhanceWorker:
    """Ray actor (or the in-process worker): one model, many videos."""

    def __init__(self, checkpoint: str, device: str, crf: float, preset: str,
                 pix_fmt: str = "yuv420p", faces: dict[str, Any] | None = None,
                 bg_upsampler: str | None = None, frame_progress: bool = False,
                 aligned_preset: str = "stc"):
        self.enhancer = Enhancer(checkpoint, device, crf, preset, pix_fmt,
                                 FaceOptions(**faces) if faces is not None else None,
                                 bg_upsampler, aligned_preset)
        self.frame_progress = frame_progress

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        bar, on_frame = None, None
        if self.frame_progress and self.enhancer.faces is not None:
            bar, on_frame = frame_bar(item["src"])
        try:
            stats = self.enhancer.enhance(item["src"], item["dst"], crops_dir=item.get("crops"),
                                          on_frame=on_frame)
        finally:
            if bar is not None:
                bar.close()
        return {"rows": [{"src": item["src"], "dst": item["dst"], "status": "ok", "message": "",
                          "stats": stats}]}


def frame_bar(src: str | Path):
    """A per-frame progress bar for one video's two passes (tracking, then restoring) and
    the callback that moves it."""
    from tqdm import tqdm

    total = count_frames(src)
    bar = tqdm(total=2 * total or None, unit="frame", desc=f"{Path(src).name}: tracking",
               leave=False, position=1, dynamic_ncols=True)
    state = {"phase": "tracking", "done": 0}

    def on_frame(phase: str, done: int) -> None:
        if phase != state["phase"]:
            state["phase"] = phase
            bar.set_description_str(f"{Path(src).name}: {phase}")
        offset = total if phase == "restoring" else 0
        bar.update(offset + done - bar.n)

    return bar, on_frame


def output_complete(src: str | Path, dst: str | Path, recorded: dict[str, Any] | None) -> bool:
    """Whether an earlier output of `src` holds all its frames (as the run that wrote it
    recorded, else as the input says): a file cut short by a crash or a deleted frame is
    redone, not skipped."""
    got = count_frames(dst)
    want = (recorded or {}).get("frames") or count_frames(src)
    return got > 0 and (got == want or not want)


def _same_file(src: str, dst: str) -> bool:
    """`dst` is `src` (the same path, or a link or hard link to the same file)."""
    if resolved(src) == resolved(dst):
        return True
    try:
        return os.path.samefile(src, dst)
    except OSError:
        return False


def _write_stats(out_dir: Path, enhancer_info: dict[str, Any], videos: dict[str, Any]) -> None:
    path = out_dir / ENHANCE_STATS
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old.get("videos", {}), **videos}
    ok = [v for v in merged.values() if v.get("model_clips", v.get("chunks"))]
    frames = sum(v.get("model_clips", v.get("chunks")) * v["chunk_frames"] for v in ok)
    summary = {**enhancer_info, "videos": merged,
               "seconds_per_clip": (sum(v["model_seconds"] for v in ok) * 24 / frames
                                    if frames else None)}
    write_text_atomic(path, json.dumps(summary, indent=2))


def run_enhance(inputs: list[str], out: str | Path, checkpoint: str | Path, device: str = "auto",
                crf: float = 18, preset: str = "medium", workers: int | None = None,
                address: str | None = None, num_cpus: int | None = None,
                overwrite: bool = False, progress: bool = True,
                verbose: bool = False, *, aligned: bool = False,
                faces: FaceOptions | None = None, bg_upsampler: str | Path | None = None,
                save_crops: bool = False, pix_fmt: str = "yuv420p",
                aligned_preset: str = "stc") -> dict[str, Any]:
    """Restore one video into the file `out`, or several into the folder `out`.

    Full frames by default (faces found, restored and pasted back, options in `faces`);
    `aligned=True` for inputs that are face crops already, by stc's chunked path or, with
    `aligned_preset="authors"`, as the authors' scripts/infer_bfvr.py."""
    check_checkpoint(checkpoint)
    if aligned_preset not in ALIGNED_PRESETS:
        raise ConfigError(f"preset {aligned_preset!r} is not one of {list(ALIGNED_PRESETS)}")
    if aligned_preset == "authors" and not aligned:
        raise ConfigError("--preset authors reproduces the authors' inference script, which "
                          "takes aligned face videos (no face detection): add --aligned, or "
                          "leave --preset out for stc's face-aware path on full frames")
    if aligned and (bg_upsampler or save_crops or (faces and faces.upscale != 1)):
        raise ConfigError("--aligned restores whole frames at the model's size: --upscale, "
                          "--bg-upsampler and --save-crops apply to full-frame videos only")
    if bg_upsampler and not (faces and faces.upscale > 1):
        raise ConfigError("--bg-upsampler needs --upscale N (N = the upsampler's factor)")
    faces = None if aligned else (faces or FaceOptions())
    # a folder of images is one input (a frame sequence), not a folder of videos
    folders = [str(Path(i).resolve()) for i in inputs if is_frame_folder(i)]
    if folders and aligned:
        raise ConfigError("--aligned takes videos; a frame folder is restored full-frame")
    others = [i for i in inputs if not is_frame_folder(i)]
    sources = folders + ([p for p, _ in gather_inputs(others)] if others else [])
    if not sources:
        raise FileNotFoundError(f"no videos or frame folders found in {inputs}")
    out = Path(out)
    single = len(sources) == 1 and (out.suffix.lower() in VIDEO_SUFFIXES
                                    or Path(sources[0]).is_dir())
    out_dir = out.parent if single else out
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in sources:
        name = Path(s).name if Path(s).is_dir() else Path(s).stem + ".mp4"
        dst = out if single else out / name
        job = {"src": s, "dst": str(dst)}
        if save_crops:
            job["crops"] = str(dst.with_name(dst.stem + "_crops"))
        jobs.append(job)
    same = [j["src"] for j in jobs if _same_file(j["src"], j["dst"])]
    if same:
        raise ConfigError(f"the output of {same[0]} would be {same[0]} itself"
                          f"{f' (and {len(same) - 1} more)' if len(same) > 1 else ''}: writing "
                          "it would destroy the input, --overwrite or not. Give another -o")
    recorded = {}
    if (out_dir / ENHANCE_STATS).exists():
        recorded = json.loads((out_dir / ENHANCE_STATS).read_text()).get("videos", {})
    done, partial = {}, []
    for j in jobs if not overwrite else []:
        if Path(j["dst"]).exists():
            if output_complete(j["src"], j["dst"], recorded.get(Path(j["dst"]).stem)):
                done[j["dst"]] = "ok"
            else:
                partial.append(j["dst"])
    if done:
        print(f"stc enhance: {len(done)} output(s) exist already and are complete, skipping "
              "them (--overwrite to redo)", file=sys.stderr)
    for dst in partial:
        print(f"stc enhance: {dst} exists but is incomplete; redoing it", file=sys.stderr)
    info = {"checkpoint": str(checkpoint), "device": pick_device(device),
            "mode": ("aligned-authors" if aligned_preset == "authors" else "aligned")
            if aligned else "faces"}
    gpu = 1 if info["device"].startswith("cuda") else 0
    pipeline = Pipeline(
        name="enhance", unit="video", out=out_dir, worker=EnhanceWorker,
        worker_kwargs={"checkpoint": str(checkpoint), "device": device, "crf": crf,
                       "preset": preset, "pix_fmt": pix_fmt,
                       "faces": asdict(faces) if faces is not None else None,
                       "bg_upsampler": str(bg_upsampler) if bg_upsampler else None,
                       "frame_progress": progress and len(jobs) - len(done) <= 1 and not workers,
                       "aligned_preset": aligned_preset},
        key="dst",
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
    return {"outputs": [j["dst"] for j in jobs], "done": len(results), "skipped": len(done),
            "errors": errors, "stats": str(out_dir / ENHANCE_STATS),
            "faces": {k: {f: v.get(f) for f in ("faces", "frames_with_face", "frames")}
                      for k, v in results.items() if v.get("mode") == "faces"}}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enhance", help="restore the faces of videos with a trained Stage II model",
        description="Find and track the faces of each video, restore them with a Stage II run "
                    "(`stc train stage2`) and paste them back, keeping size (or x --upscale), "
                    "fps and audio. --aligned: the inputs are face crops already (as `stc "
                    "curate` writes them). One video: -o OUT.mp4; several: -o OUT_DIR.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders, globs or .txt lists; a folder of images is "
                        "one frame sequence (restored into a folder of PNGs of the same names)")
    p.add_argument("-o", "--out", required=True, help="output .mp4 (one input) or folder")
    p.add_argument("--checkpoint", required=True,
                   help="Stage II run folder (its last curriculum step), step folder or checkpoint")
    faces = p.add_argument_group("faces (full-frame videos)")
    faces.add_argument("--aligned", action="store_true",
                       help="inputs are face crops already: restore whole frames at the model's "
                            "size, no detection")
    faces.add_argument("--upscale", type=positive_int, default=1, metavar="N",
                       help="output size = input size x N; the background by plain resize "
                            "(default 1)")
    faces.add_argument("--bg-upsampler", default=None, metavar="FILE",
                       help="your TorchScript x N background upsampler instead of the plain resize")
    faces.add_argument("--only-center-face", action="store_true",
                       help="restore only the face nearest the frame centre")
    faces.add_argument("--save-crops", action="store_true",
                       help="also write OUT_crops/boxes.csv (per frame and face: shot, track, "
                            "crop box, detected, restored) and each face's input and restored "
                            "crops")
    faces.add_argument("--draw-box", action="store_true",
                       help="draw each restored face's crop box (green) and detection (yellow) "
                            "on the output, to check what was found")
    faces.add_argument("--detector", choices=sorted(DETECTOR_DEFAULTS), default=FaceOptions.detector,
                       help="dlib's frontal HOG (fast) or its MMOD CNN (finds turned and "
                            "smaller faces, ~40x slower, so run on fewer frames); default "
                            f"{FaceOptions.detector}")
    faces.add_argument("--detect-every", type=positive_int, default=None, metavar="K",
                       help="run the face detector on every k-th frame, interpolate between "
                            "(default: every frame for hog, 5 a second for cnn)")
    faces.add_argument("--shots", choices=["transnetv2", "scenedetect", "none"],
                       default=FaceOptions.shots,
                       help="how cuts are found (tracks end at every cut); default "
                            f"{FaceOptions.shots}, as stc curate")
    faces.add_argument("--smooth", type=float, default=FaceOptions.smooth_seconds,
                       metavar="SECONDS",
                       help="crop smoothing window (Savitzky-Golay over centre and size; 0: "
                            f"off); default {FaceOptions.smooth_seconds:g}")
    faces.add_argument("--no-color-match", action="store_true",
                       help="paste the restored face as the model made it, without matching "
                            "the frame's colour at the seam")
    faces.add_argument("--fps", type=float, default=FaceOptions.fps,
                       help=f"frame rate of frame-folder inputs (default {FaceOptions.fps:g})")
    faces.add_argument("--overlap", type=non_negative_int, default=None, metavar="FRAMES",
                       help="frames shared by consecutive chunks, crossfaded (default T/4)")
    faces.add_argument("--expand", type=float, default=FaceOptions.expand, metavar="X",
                       help=f"face box side x this = crop side, as curation crops "
                            f"(default {FaceOptions.expand:g})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--crf", type=float, default=18, help="libx264 CRF of the output (default 18)")
    p.add_argument("--preset", default=None, choices=X264_PRESETS + ALIGNED_PRESETS,
                   metavar="PRESET",
                   help="with --aligned, 'authors' handles frames as the authors' "
                        "scripts/infer_bfvr.py (the first 24 frames squashed to the model's "
                        "size, one pass, one min-max over the clip, 24 fps), to compare with "
                        "their published outputs; 'stc' (default) is stc's any-length path. "
                        f"Any other value is the libx264 preset ({', '.join(X264_PRESETS)}; "
                        "default medium), also settable as --x264-preset")
    p.add_argument("--x264-preset", default=None, choices=X264_PRESETS, metavar="PRESET",
                   help="libx264 preset of the output (default medium)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="Ray actors for several videos (default: one per CPU, or per GPU)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    add_ray_args(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        faces = FaceOptions(detector=args.detector, detect_every=args.detect_every,
                            shots=args.shots, expand=args.expand, smooth_seconds=args.smooth,
                            overlap=args.overlap, only_center_face=args.only_center_face,
                            upscale=args.upscale, draw_box=args.draw_box,
                            color_match=not args.no_color_match, fps=args.fps)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    aligned_preset = args.preset if args.preset in ALIGNED_PRESETS else "stc"
    x264 = args.x264_preset or (args.preset if args.preset in X264_PRESETS else "medium")
    summary = run_enhance(args.inputs, args.out, args.checkpoint, args.device, args.crf,
                          x264, args.workers, args.address, args.num_cpus, args.overwrite,
                          verbose=args.verbose, aligned=args.aligned, faces=faces,
                          bg_upsampler=args.bg_upsampler, save_crops=args.save_crops,
                          aligned_preset=aligned_preset)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        where = summary["outputs"][0] if len(summary["outputs"]) == 1 \
            else str(Path(summary["stats"]).parent)
        faces_line = "".join(
            f"\n  {k}: {v['faces']} face track(s), restored on {v['frames_with_face']} of "
            f"{v['frames']} frames" for k, v in summary["faces"].items())
        print(f"stc enhance: {summary['done']} restored, {summary['skipped']} skipped, "
              f"{len(summary['errors'])} failed -> {where}{faces_line}", file=sys.stderr)
        if summary["done"]:
            print_next([f"stc eval --pred {Path(summary['stats']).parent} --gt GT_DIR "
                        "--out eval.parquet   (score against ground truth, same file stems)"])
    return 1 if summary["errors"] else 0
