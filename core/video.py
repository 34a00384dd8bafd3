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
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from stc.core.fs import TEMP_PREFIX, atomic_path
from stc.core.proc import run_program, start_program


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
# libx264's presets, fastest first: a config naming another is refused when it is loaded,
# not by ffmpeg in the middle of a run.
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                     "slower", "veryslow", "placebo"]
X264_PRESETS: tuple[str, ...] = X264Preset.__args__


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
    # `duration` is the picture's own: the video stream's, or the container's when it holds
    # nothing else (an audio track may outlast the picture)
    picture_duration: bool = True


def _frame_rotation(frame) -> int:
    """Degrees clockwise a decoded frame must be turned for display, as ffmpeg's autorotate
    (and so `crop_transcode`) turns it. PyAV 18 exposes the display matrix only on decoded
    frames (`frame.rotation`, counter-clockwise degrees); its streams have no side data."""
    try:
        ccw = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(-ccw / 90)) * 90 % 360


def _rotation(container, stream) -> int:
    """Display rotation of a stream: an explicit `rotate` tag (older demuxers), else the
    display matrix of its first decoded frame (0 when none decodes; decoding reports that)."""
    import av

    meta_rot = (stream.metadata or {}).get("rotate")
    if meta_rot:
        try:
            return int(round(float(meta_rot) / 90)) * 90 % 360
        except ValueError:
            pass
    try:
        for frame in container.decode(stream):
            return _frame_rotation(frame)
    except av.error.FFmpegError:
        pass
    return 0


class TruncatedVideo(VideoError):
    """A file that ends before the data its container declares: an interrupted download or
    copy. Reported as `truncated`, never analysed from the part that is there."""


def _mp4_shortfall(path: Path) -> tuple[int, int] | None:
    """(bytes the top-level boxes of an MP4/MOV claim, bytes the file has) when the boxes
    run past the end of the file, else None (also for files that are not ISO-BMFF).

    A cut mp4 either lost its index (moov at the end: ffmpeg cannot open it) or keeps an
    index that points past the end (moov first: ffmpeg decodes the part that is there and
    says nothing), so the box sizes are the one sign that holds for both."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] != b"ftyp":
            return None
        pos = 0
        while pos < size:
            f.seek(pos)
            hdr = f.read(16)
            # Trailing bytes that are no box header (padding, a cut inside a header): no
            # verdict here; the decoded frame count still catches a short file.
            if len(hdr) < 8 or not all(32 <= b < 127 for b in hdr[4:8]):
                return None
            box = int.from_bytes(hdr[:4], "big")
            if box == 1:                        # a 64-bit size follows the type
                if len(hdr) < 16:
                    return None
                box = int.from_bytes(hdr[8:16], "big")
            elif box == 0:                      # the last box runs to the end of the file
                return None
            if box < 8:
                return None                     # not a box structure we understand: no verdict
            pos += box
        return (pos, size) if pos > size else None


def _check_not_cut(path: Path) -> None:
    short = _mp4_shortfall(path)
    if short:
        need, have = short
        raise TruncatedVideo(
            f"{path}: truncated: the file has {have} bytes but its mp4 boxes need {need} "
            f"({100 * have / need:.0f}% present; an interrupted download or copy); download "
            "it again or remove it")


def check_frame_count(info: "VideoInfo", decoded: int, last_time: float | None = None) -> None:
    """TruncatedVideo when a decode ended clearly short of what the container declares.

    With a declared frame count (mp4, mov): fewer frames than it, beyond a slack of 2% + 1
    frame for edit lists and decoder delay. Without one (mkv, webm): the last frame's time
    `last_time` more than max(1 s, 5%) before the picture's declared duration (not judged
    when only the container's duration is known and an audio track could outlast the
    picture). A cut file misses far more."""
    declared = info.num_frames
    if declared:
        if decoded < declared * 0.98 - 1:
            raise TruncatedVideo(
                f"{info.path}: truncated: {decoded} of the {declared} frames its container "
                f"declares could be decoded ({info.duration:.2f} s declared); the file was cut "
                "short or is damaged: download it again or remove it")
        return
    if last_time is not None and info.picture_duration and info.duration > 0 and info.fps > 0:
        covered = last_time + 1 / info.fps
        if info.duration - covered > max(1.0, 0.05 * info.duration):
            raise TruncatedVideo(
                f"{info.path}: truncated: its frames end at {covered:.2f} s of the "
                f"{info.duration:.2f} s its container declares; the file was cut short or is "
                "damaged: download it again or remove it")


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
        _check_not_cut(path)
        raise VideoError(f"{path}: not a video ffmpeg can open ({exc}); re-download or remove it") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream; remove it from the inputs")
    if video_stream(container) is None:
        container.close()
        raise VideoError(f"{path}: its only video stream is a still picture attached to the file "
                         "(cover art), not footage; remove it from the inputs")
    return container


# Codecs of single pictures: a one-frame stream of one of these is cover art or a poster,
# whether flagged `attached_pic` or muxed as a plain track (.mkv keeps no such flag).
STILL_IMAGE_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000", "jpegls", "qoi"}


def _still(stream) -> bool:
    return stream.codec_context.name in STILL_IMAGE_CODECS and (stream.frames or 0) <= 1


def video_stream(container):
    """The stream to read: the first video stream that is footage, not a still picture
    (cover art: disposition `attached_pic`, or a one-frame image track, which an .mkv may
    list before the video); a still-image codec stream only when nothing else is there (a
    PNG-coded video); None when the file holds only an attached picture."""
    import av

    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & attached]
    return next((s for s in streams if not _still(s)), streams[0] if streams else None)


def video_stream_index(path: str | Path) -> int:
    """The container index of `video_stream`, for ffmpeg's `-map 0:N` / `[0:N]`."""
    container = _open(path)
    try:
        return video_stream(container).index
    finally:
        container.close()


def probe(path: str | Path) -> VideoInfo:
    """fps, frame count, size, duration, codec and rotation of a video, or VideoError
    (TruncatedVideo for a file cut short)."""
    container = _open(path)
    try:
        _check_not_cut(Path(path))
        stream = video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration, own = 0.0, True
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
            own = len(container.streams) == 1
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = _rotation(container, stream)
        if rotation in (90, 270):
            width, height = height, width
        if not width or not height:
            raise VideoError(f"{path}: video stream reports no frame size; re-encode or remove it")
        return VideoInfo(
            path=str(path), fps=fps, num_frames=int(stream.frames or 0), width=width,
            height=height, duration=duration, codec=stream.codec_context.name, rotation=rotation,
            picture_duration=own,
        )
    finally:
        container.close()


def owned_array(img: np.ndarray) -> np.ndarray:
    """`img` as a C-contiguous array that owns its memory, copied only when it is not.

    Native libraries (dlib, OpenCV, onnxruntime) take a pointer and assume dense rows. PyAV
    hands out views of frame buffers whose rows are padded (a 388 px rgb24 row is 1200
    bytes, not 1164), and dlib ignores the strides: it read the padding, so the same frame
    gave different faces depending on what the process had decoded before.
    """
    if img.flags.c_contiguous and img.flags.owndata:
        return img
    return np.array(img, order="C", copy=True)


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    # np.rot90 turns counter-clockwise; display rotation is clockwise.
    return np.rot90(img, k=-(rotation // 90)) if rotation else img


class _Decoder:
    """An open video's first video stream, tracking the index of the last decoded frame so
    that a decoding error can say where it stopped."""

    def __init__(self, path: str | Path, rotation: int | None = None):
        self.container = _open(path)
        self.stream = video_stream(self.container)
        self.stream.thread_type = "AUTO"
        # None: taken from the first decoded frame's display matrix (no extra decode).
        self.rotation = rotation
        self.index = -1

    def frames(self) -> Iterator:
        """Every frame from the start, numbered in decode-output (display) order."""
        for self.index, frame in enumerate(self.container.decode(self.stream)):
            yield self.index, frame

    def image(self, frame, fmt: str) -> np.ndarray:
        if self.rotation is None:
            self.rotation = _frame_rotation(frame)
        return owned_array(_rotate(frame.to_ndarray(format=fmt), self.rotation))


@contextlib.contextmanager
def _decoding(path: str | Path, rotation: int | None = None) -> Iterator[_Decoder]:
    """Open `path` for decoding; ffmpeg errors inside become VideoError naming the file."""
    import av

    dec = _Decoder(path, rotation)
    try:
        yield dec
    except av.error.FFmpegError as exc:
        # A threaded decoder reports the missing end of a cut file as an error rather than
        # an early end of stream; with frames declared beyond it, that is a truncated file.
        declared = int(dec.stream.frames or 0)
        decoded = dec.index + 1
        if decoded > 0 and declared and decoded < declared * 0.98 - 1:
            raise TruncatedVideo(
                f"{path}: truncated: decoding failed after {decoded} of the {declared} frames "
                f"its container declares ({exc}); the file was cut short or is damaged: "
                "download it again or remove it") from None
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


def scan_frames(path: str | Path, thumb: tuple[int, int] | None, want: Callable[[int], bool],
                max_side: int, luma: Callable[[int, np.ndarray], None] | None = None,
                also: Callable[[int, np.ndarray | None], tuple[bool, bool]] | None = None,
                threads: int = 0
                ) -> Iterator[tuple[int, float | None, np.ndarray | None, np.ndarray | None]]:
    """Decode every frame once for analysis without making full-size RGB frames: yield
    (index, time, thumb, sample) per frame, `time` its timestamp in seconds (pts x time
    base, None when the stream has none), `thumb` the frame scaled to exactly `thumb` = (w, h)
    (None when not asked), `sample` the frame shrunk so its longer side is at most
    `max_side` for the frames `want(index)` selects (else None). Both are RGB, in display
    orientation, converted by swscale straight from the decoder's pixels with area
    averaging (a third of the cost of its bicubic filter on a 48x27 thumb), and own their
    memory.

    The last frame, when `want` skipped it, is yielded once more after it with time and
    thumb None and its sample (container frame counts can be wrong, so only the end tells which
    frame is last). Errors raise VideoError naming the file and the frame.

    `luma(index, gray)`, when given, gets the full-resolution luma of every sampled frame
    (display orientation) just before that frame is yielded: what a caller measures in
    source pixels (face sharpness, blocking on the coded 8x8 grid) without a second decode.

    `also(index, thumb)`, when given, may ask for samples `want` did not select, from what
    the frame's thumbnail shows: (this frame, the previous frame too). The previous frame's
    sample comes first, as (index - 1, None, None, sample), like the repeat of the last
    frame (a check on two adjacent frames, such as a jump cut's, needs both).

    `threads`: decoder threads (0: FFmpeg's choice, about one per core). A worker that owns
    one core decodes in 0.85-0.9x the CPU time on one thread (h264 720p, measured)."""

    def convert(frame, coded: tuple[int, int] | None, interp: str) -> np.ndarray:
        """`frame` as RGB at the (w, h) `coded` size (None: as decoded), then turned."""
        if coded is None:
            img = frame.to_ndarray(format="rgb24")
        else:
            img = frame.reformat(coded[0], coded[1], "rgb24", interpolation=interp).to_ndarray()
        return owned_array(_rotate(img, dec.rotation))

    def sample(frame) -> np.ndarray:
        w, h = frame.width, frame.height
        s = max_side / max(w, h)
        return convert(frame, None if s >= 1 else (max(2, round(w * s)), max(2, round(h * s))), "AREA")

    index, last, sampled, last_sampled = -1, None, False, False
    with _decoding(path) as dec:
        if threads > 0:
            dec.stream.thread_count = threads
        for index, frame in dec.frames():
            if dec.rotation is None:
                dec.rotation = _frame_rotation(frame)
            small = None
            if thumb is not None:
                small = convert(frame, thumb[::-1] if dec.rotation in (90, 270) else thumb, "AREA")
            sampled = want(index)
            if also is not None:
                this, before = also(index, small)
                if before and last is not None and not last_sampled:
                    yield index - 1, None, None, sample(last)
                sampled = sampled or this
            if sampled and luma is not None:
                luma(index, owned_array(_rotate(frame.to_ndarray(format="gray"), dec.rotation)))
            yield index, frame.time, small, (sample(frame) if sampled else None)
            last, last_sampled = frame, sampled
        if last is not None and not sampled:
            if luma is not None:
                luma(index, owned_array(_rotate(last.to_ndarray(format="gray"), dec.rotation)))
            yield index, None, None, sample(last)


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
    proc = run_program(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


@dataclass(frozen=True)
class Segment:
    """Part of a video, picked by frame timestamps (seconds, as the decoder stamps them:
    pts x time base): the frames with `after` < t < `before` (None: unbounded), at most
    `frames` of them. `seek` (seconds from the file's start) lies at or before the first
    of them; decoding starts at the keyframe before it instead of at frame 0. For a stream
    without timestamps, `first` picks the frames by decode order instead (frames
    first..first+frames-1, decoded from frame 0)."""

    frames: int
    after: float | None = None
    before: float | None = None
    seek: float = 0.0
    first: int | None = None


def crop_transcode(src: str | Path, dst: str | Path, box: tuple[int, int, int, int], size: int,
                   crf: float = 10, preset: str = "medium", pix_fmt: str = "yuv420p",
                   threads: int = 0, analysis_size: int | None = None, keyint: int = 0,
                   segment: Segment | None = None) -> Iterator[np.ndarray]:
    """Crop `box` (x0, y0, x1, y1, display coordinates) from `src` (only `segment` of it
    when given), scale to size x size and encode to `dst` with libx264, in one ffmpeg
    decode; yield the same frames as grayscale arrays (at `analysis_size`, default `size`)
    while they are encoded, so the caller can analyse the written clip without decoding it
    again.

    `dst` appears only once the whole clip is written.
    """

    x0, y0, x1, y1 = box
    a = analysis_size or size
    dst = Path(dst)
    with atomic_path(dst, suffix=".mp4") as tmp, tempfile.TemporaryFile() as err:
        pick, inp, limit = "", [], []
        if segment is not None and segment.first is not None:
            last = segment.first + segment.frames - 1
            pick = f"select=between(n\\,{segment.first}\\,{last}),setpts=PTS-STARTPTS,"
            limit = ["-frames:v", str(segment.frames)]
        elif segment is not None:
            # Original timestamps (-copyts) pick the frames exactly; the clip restarts at 0.
            expr = "*".join([f"gt(t\\,{segment.after!r})"] * (segment.after is not None)
                            + [f"lt(t\\,{segment.before!r})"] * (segment.before is not None)) or "1"
            pick = f"select={expr},setpts=PTS-STARTPTS,"
            if segment.seek > 0:
                inp = ["-ss", f"{segment.seek:.6f}", "-noaccurate_seek"]
            inp = ["-copyts", *inp]
            limit = ["-frames:v", str(segment.frames)]
        graph = (f"[0:{video_stream_index(src)}]{pick}crop={x1 - x0}:{y1 - y0}:{x0}:{y0},"
                 f"scale={size}:{size}:flags=lanczos,setsar=1,split=2[enc][ana];"
                 f"[ana]scale={a}:{a}:flags=area,format=gray[gray]")
        # `threads` > 0 holds the decoder and filters to it as well as x264.
        inp = [*inp, "-threads", str(threads), "-filter_complex_threads", str(threads)] if threads > 0 else inp
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *inp, "-i", str(src),
               "-filter_complex", graph,
               "-map", "[enc]", "-an", "-fps_mode", "passthrough", *limit,
               *x264_args(crf, preset, pix_fmt, threads, keyint), str(tmp),
               "-map", "[gray]", "-fps_mode", "passthrough", *limit, "-f", "rawvideo", "pipe:1"]
        proc = start_program(cmd, stdout=subprocess.PIPE, stderr=err)
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


class FrameSink:
    """What every frame writer shares (an x264 file, a PNG folder): RGB uint8 frames of one
    size; the output appears only when `close()` succeeds; as a context manager, an error
    leaves nothing behind (`abort()`)."""

    path: Path
    size: tuple[int, int]       # (height, width)
    frames: int

    def check(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self.size or frame.dtype != np.uint8:
            raise VideoError(f"{self.path}: frame {self.frames} is {frame.shape} {frame.dtype}, "
                             f"expected {self.size} uint8")

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FrameWriter(FrameSink):
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
        # The temp prefix every writer uses: a killed run's leftover is cleaned by the next.
        self.tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.stem}.{os.getpid()}.tmp.mp4")
        fps_q = Fraction(fps).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps_q),
               "-i", "pipe:0"]
        if audio_from is not None:
            # `?`: a source without audio is fine; the audio is copied, not re-encoded. No
            # -shortest: it cut every written frame past the end of a shorter audio track;
            # the output keeps the source's own audio and video lengths.
            cmd += ["-i", str(audio_from), "-map", "0:v", "-map", "1:a?", "-c:a", "copy"]
        cmd += [*x264_args(crf, preset, pix_fmt, threads), str(self.tmp)]
        self._err = tempfile.TemporaryFile()
        self.proc = start_program(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=self._err)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.check(frame)
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
