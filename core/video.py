"""Video input/output shared by every pipeline: PyAV probes and decodes, ffmpeg encodes.

Decoding goes through PyAV (in-process, frame-accurate, cheap to skip colour conversion
for frames nobody looks at). Encoding goes through the ffmpeg binary with libx264, the
system one when present, else the one inside the `imageio-ffmpeg` wheel. Every encode is
written to a temporary name and moved into place, and uses bit-exact flags so the same
frames give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from stc.core.fs import atomic_path


class VideoError(RuntimeError):
    """A video cannot be opened, decoded or encoded; the message names the file."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $STC_FFMPEG, a system ffmpeg, or imageio-ffmpeg's."""
    exe = os.environ.get("STC_FFMPEG") or shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise VideoError(
            "no ffmpeg found: install one on PATH, set STC_FFMPEG, or `pip install imageio-ffmpeg`"
        ) from exc


# Same frames, same bytes: no timestamps, encoder version strings or random muxer ids.
BITEXACT = {"fflags": "+bitexact", "flags:v": "+bitexact", "map_metadata": "-1"}


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int        # from the container; 0 when it does not say (count by decoding)
    width: int             # display size, after rotation
    height: int
    duration: float
    codec: str
    rotation: int          # degrees clockwise the frames must be turned for display


def _rotation(stream) -> int:
    """Display rotation from the stream's display matrix, as ffmpeg's autorotate applies it."""
    try:
        from av.sidedata.sidedata import Type  # noqa: F401
    except ImportError:
        pass
    matrix = None
    side_data = getattr(stream, "side_data", None)
    if side_data:
        for key, value in dict(side_data).items():
            if "DISPLAYMATRIX" in str(key).upper():
                matrix = value
    if matrix is None:
        meta_rot = (stream.metadata or {}).get("rotate")
        return int(meta_rot) % 360 if meta_rot else 0
    try:
        return int(round(-float(matrix))) % 360
    except (TypeError, ValueError):
        return 0


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found; check the path or remove it from the input list")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes); re-download or remove it")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise VideoError(f"{path}: not a video ffmpeg can open ({exc}); re-download or remove it") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream; remove it from the inputs")
    return container


def probe(path: str | Path) -> VideoInfo:
    """fps, frame count, size, duration, codec and rotation of a video, or VideoError."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = _rotation(stream)
        if rotation in (90, 270):
            width, height = height, width
        if not width or not height:
            raise VideoError(f"{path}: video stream reports no frame size; re-encode or remove it")
        return VideoInfo(
            path=str(path), fps=fps, num_frames=int(stream.frames or 0), width=width,
            height=height, duration=duration, codec=stream.codec_context.name, rotation=rotation,
        )
    finally:
        container.close()


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    # np.rot90 turns counter-clockwise; display rotation is clockwise.
    return np.ascontiguousarray(np.rot90(img, k=-(rotation // 90))) if rotation else img


class _Decoder:
    """An open video's first video stream, tracking the index of the last decoded frame so
    that a decoding error can say where it stopped."""

    def __init__(self, path: str | Path, rotation: int | None = None):
        self.container = _open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rotation = _rotation(self.stream) if rotation is None else rotation
        self.index = -1

    def frames(self) -> Iterator:
        """Every frame from the start, numbered in decode-output (display) order."""
        for self.index, frame in enumerate(self.container.decode(self.stream)):
            yield self.index, frame

    def image(self, frame, fmt: str) -> np.ndarray:
        return _rotate(frame.to_ndarray(format=fmt), self.rotation)


@contextlib.contextmanager
def _decoding(path: str | Path, rotation: int | None = None) -> Iterator[_Decoder]:
    """Open `path` for decoding; ffmpeg errors inside become VideoError naming the file."""
    import av

    dec = _Decoder(path, rotation)
    try:
        yield dec
    except av.error.FFmpegError as exc:
        raise VideoError(
            f"{path}: decoding failed after frame {dec.index} ({exc}); the file is corrupt or "
            "truncated: re-download or remove it"
        ) from None
    finally:
        dec.container.close()


def iter_frames(path: str | Path, fmt: str = "rgb24", want=None,
                rotation: int | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """Decode every frame once, yielding (index, image) in display orientation.

    `want(index) -> bool` selects the frames that are converted to arrays; the others
    yield None without paying for colour conversion. Decoding errors raise VideoError
    naming the file and the frame where decoding stopped.
    """
    with _decoding(path, rotation) as dec:
        for index, frame in dec.frames():
            yield index, (dec.image(frame, fmt) if want is None or want(index) else None)


def decode_sampled(path: str | Path, indices: set[int], on_frame, fmt: str = "rgb24",
                   include_last: bool = True) -> int:
    """Decode the whole video once, calling `on_frame(index, image)` for the frames in
    `indices` and, with `include_last`, for the true last frame (container frame counts
    can be wrong). Returns the number of frames decoded."""
    index, last, done = -1, None, False
    with _decoding(path) as dec:
        for index, frame in dec.frames():
            done = index in indices
            if done:
                on_frame(index, dec.image(frame, fmt))
            last = frame
        if include_last and last is not None and not done:
            on_frame(index, dec.image(last, fmt))
    return index + 1


@functools.lru_cache(maxsize=256)
def _first_pts(path: str, mtime_ns: int, size: int) -> int | None:
    """pts of the first frame a decode from the start outputs (keyed on the file's
    mtime and size so a rewritten file is probed again)."""
    with _decoding(path) as dec:
        for _, frame in dec.frames():
            return frame.pts
    return None


def seek_window(path: str | Path, start: int, count: int | None = None,
                fmt: str = "rgb24") -> np.ndarray | None:
    """Frames [start, start+count) found by seeking to the keyframe at or before `start`
    and decoding forward, or None where that cannot be trusted to give exactly the frames a
    decode from frame 0 gives (then decode linearly; `read_frames` does).

    A frame's index comes from its pts: (pts - first_pts) * time_base * fps. That numbering
    equals the decode order only for a constant-rate stream without gaps, so the stream must
    say so (average rate == base rate, frame count == duration in frames), and every frame
    decoded after the seek must sit on the frame grid, one index after the previous.
    """
    import av

    stop = None if count is None else start + count
    with _decoding(path) as dec:
        s = dec.stream
        rate, tb = s.average_rate, s.time_base
        if not rate or not tb or rate != s.base_rate or not s.frames or s.duration is None:
            return None
        ticks = 1 / (Fraction(rate) * Fraction(tb))     # pts units per frame
        if round(s.duration / ticks) != s.frames:
            return None                                  # dropped or repeated frames somewhere
        st = os.stat(path)
        first = _first_pts(str(path), st.st_mtime_ns, st.st_size)
        if first is None:
            return None
        try:
            dec.container.seek(int(first + start * ticks), stream=s, backward=True, any_frame=False)
        except av.error.FFmpegError:
            return None
        frames, prev = [], None
        for frame in dec.container.decode(s):
            if frame.pts is None:
                return None
            pos = (frame.pts - first) / ticks
            index = round(pos)
            if abs(pos - index) > Fraction(1, 8):
                return None                              # off the frame grid: not constant rate
            if (prev is None and index > start) or (prev is not None and index != prev + 1):
                return None                              # sought past `start`, or a gap
            prev = dec.index = index
            if index >= start:
                frames.append(dec.image(frame, fmt))
            if stop is not None and index + 1 >= stop:
                break
    return np.stack(frames) if frames else None


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos", "linear_exact")


def cv2_interp(name: str) -> int:
    """OpenCV's flag for an interpolation named in a config (deterministic per name)."""
    import cv2

    table = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
             "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
             "lanczos": cv2.INTER_LANCZOS4, "linear_exact": cv2.INTER_LINEAR_EXACT}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"interpolation {name!r} is not one of {INTERPOLATIONS}") from None


def resize_frames(frames: np.ndarray, width: int, height: int,
                  interp: str | None = None) -> np.ndarray:
    """Frames [T, H, W, C] (or one [H, W, C]) resized to width x height; unchanged when
    already that size.

    `interp` names the OpenCV interpolation (degradations record theirs); None is the rule
    for model inputs and outputs: area averaging when shrinking (no aliasing), bicubic when
    enlarging.
    """
    import cv2

    one = frames.ndim == 3
    stack = frames[None] if one else frames
    if stack.shape[1:3] == (height, width):
        return frames
    if interp is None:
        shrink = stack.shape[1] * stack.shape[2] > width * height
        flag = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    else:
        flag = cv2_interp(interp)
    out = np.stack([cv2.resize(f, (width, height), interpolation=flag) for f in stack])
    return out[0] if one else out


def read_frames(path: str | Path, start: int = 0, count: int | None = None,
                fmt: str = "rgb24") -> np.ndarray:
    """Frames [start, start+count) as one uint8 array [T, H, W, C] (C=1 squeezed for gray).

    From the middle of a clip it seeks to the nearest keyframe (`seek_window`) rather than
    decoding from frame 0, when the file's timestamps allow it."""
    if start > 0:
        window = seek_window(path, start, count, fmt)
        if window is not None:
            return window
    stop = None if count is None else start + count
    frames = []
    for i, img in iter_frames(path, fmt=fmt, want=lambda i: i >= start and (stop is None or i < stop)):
        if img is not None:
            frames.append(img)
        if stop is not None and i + 1 >= stop:
            break
    if not frames:
        raise VideoError(f"{path}: no frames in [{start}, {stop}); the clip is shorter than that")
    return np.stack(frames)


def _run_ffmpeg(cmd: list[str], what: str, stdin: bytes | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise VideoError(f"{what}: ffmpeg failed ({' | '.join(tail)})")


def x264_args(crf: float, preset: str = "medium", pix_fmt: str = "yuv420p",
              threads: int = 0, keyint: int = 0) -> list[str]:
    """ffmpeg output arguments for a bit-exact libx264 encode; `keyint` > 0 caps the frames
    between keyframes (x264's default is 250), so a reader can seek close to any frame."""
    args = ["-c:v", "libx264", "-crf", f"{crf:g}", "-preset", preset, "-pix_fmt", pix_fmt,
            "-threads", str(threads)]
    if keyint > 0:
        args += ["-g", str(keyint)]
    for k, v in BITEXACT.items():
        args += [f"-{k}", v]
    return args


def encode_frames(frames: Iterable[np.ndarray] | np.ndarray, path: str | Path, fps: float,
                  crf: float = 10, preset: str = "medium", pix_fmt: str = "yuv420p",
                  threads: int = 0, keyint: int = 0) -> Path:
    """Encode RGB uint8 frames [H, W, 3] to an mp4 with libx264, atomically."""

    frames = list(frames) if not isinstance(frames, np.ndarray) else frames
    if len(frames) == 0:
        raise VideoError(f"{path}: no frames to encode")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise VideoError(f"{path}: {w}x{h} frames cannot be encoded as {pix_fmt}; use even sizes")
    fps_q = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps_q),
               "-i", "pipe:0", "-an", *x264_args(crf, preset, pix_fmt, threads, keyint), str(tmp)]
        data = np.ascontiguousarray(np.stack(frames) if not isinstance(frames, np.ndarray) else frames,
                                    dtype=np.uint8).tobytes()
        _run_ffmpeg(cmd, f"encoding {path}", stdin=data)
    return path


def crop_transcode(src: str | Path, dst: str | Path, box: tuple[int, int, int, int], size: int,
                   crf: float = 10, preset: str = "medium", pix_fmt: str = "yuv420p",
                   threads: int = 0, analysis_size: int | None = None, keyint: int = 0
                   ) -> Iterator[np.ndarray]:
    """Crop `box` (x0, y0, x1, y1, display coordinates) from `src`, scale to size x size
    and encode to `dst` with libx264, in one ffmpeg decode; yield the same frames as
    grayscale arrays (at `analysis_size`, default `size`) while they are encoded, so the
    caller can analyse the written clip without decoding it again.

    `dst` appears only once the whole clip is written.
    """

    x0, y0, x1, y1 = box
    a = analysis_size or size
    dst = Path(dst)
    with atomic_path(dst, suffix=".mp4") as tmp, tempfile.TemporaryFile() as err:
        graph = (f"[0:v]crop={x1 - x0}:{y1 - y0}:{x0}:{y0},"
                 f"scale={size}:{size}:flags=lanczos,setsar=1,split=2[enc][ana];"
                 f"[ana]scale={a}:{a}:flags=area,format=gray[gray]")
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
               "-filter_complex", graph,
               "-map", "[enc]", "-an", "-fps_mode", "passthrough",
               *x264_args(crf, preset, pix_fmt, threads, keyint), str(tmp),
               "-map", "[gray]", "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        frame_bytes = a * a
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                yield np.frombuffer(buf, np.uint8).reshape(a, a)
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise VideoError(f"{src}: writing the cropped clip {dst} failed ({' | '.join(tail)})")


class FrameWriter:
    """Stream RGB uint8 frames into an x264 mp4 without holding the clip in memory; with
    `audio_from`, the audio streams of that file are copied in. The file appears only when
    `close()` succeeds (use it as a context manager); on an error nothing is left behind."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float | Fraction,
                 crf: float = 18, preset: str = "medium", pix_fmt: str = "yuv420p",
                 threads: int = 0, audio_from: str | Path | None = None):
        if width % 2 or height % 2:
            raise VideoError(f"{path}: {width}x{height} frames cannot be encoded as {pix_fmt}; "
                             "use even sizes")
        self.path, self.size = Path(path), (height, width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.mp4")
        fps_q = Fraction(fps).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps_q),
               "-i", "pipe:0"]
        if audio_from is not None:
            # `?`: a source without audio is fine; the audio is copied, not re-encoded.
            cmd += ["-i", str(audio_from), "-map", "0:v", "-map", "1:a?", "-c:a", "copy",
                    "-shortest"]
        cmd += [*x264_args(crf, preset, pix_fmt, threads), str(self.tmp)]
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self._err)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self.size or frame.dtype != np.uint8:
            raise VideoError(f"{self.path}: frame {self.frames} is {frame.shape} {frame.dtype}, "
                             f"expected {self.size} uint8")
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self.close()   # raises with ffmpeg's own message
        self.frames += 1

    def close(self) -> Path:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait()
        self._err.seek(0)
        tail = self._err.read().decode(errors="replace").strip().splitlines()[-3:]
        self._err.close()
        if rc != 0 or self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"writing {self.path} failed after {self.frames} frames "
                             f"({' | '.join(tail) or 'no frames given'})")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()
        self._err.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
