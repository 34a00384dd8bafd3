"""WebDataset shards of pairs (`stc degrade --format webdataset`): plain tar files that any
training job can stream, with or without stc.

Each shard `OUT/shards/RECIPE-seedSEED/shard-<time>-<pid>-<hex>.tar` holds whole clips'
pairs, three members per pair under one key (the pair id with `/` and `.` made safe):

    KEY.hq.mp4   the HQ window: the same H.264 stream as a Parquet shard's HQ, muxed into
                 mp4 without re-encoding
    KEY.lq.mp4   the LQ. For a recipe ending in BFVR: the low-resolution H.264 stream the
                 degradation produced (`lq_format` h264-lowres; the training input is that
                 video resized to width x height with `lq_up_interp`, OpenCV, as stc does).
                 For any other recipe: the LQ frames, losslessly (libx264rgb -qp 0), so the
                 tar needs no stc to replay brightness parameters.
    KEY.json     the pair's manifest fields: pair_id, clip_id, recipe, seed, window,
                 start_frame, num_frames, fps, width, height, formats and `params`

The pairs manifest names the tar in `lq_path_or_shard` and the pair's sample index in
`shard_row`, so `PairDataset` reads these shards like Parquet ones and gives the same
tensors. Members carry fixed metadata (mtime 0, uid/gid 0, mode 0644) and mp4s are muxed
with libavformat's bit-exact flag: the same pairs give the same bytes.

Workers build the members (`to_sample`) and write the tars themselves: the pairs of one
task (`--part-size` clips) are packed into shards of up to `--shard-mb`, each written with
one atomic write (a temp file renamed, or one PUT on object storage).

Reading them with `webdataset` (no stc needed for the bytes; `decode` for frames):

    import webdataset as wds
    from stc.degrade import webdataset as stc_wds

    ds = stc_wds.dataset(sorted(glob("OUT/shards/bfvr-seed0/shard-*.tar"))).batched(8)
    loader = wds.WebLoader(ds, batch_size=None, num_workers=4)
    for batch in loader:   # batch["lq"], batch["hq"]: uint8 [8, T, H, W, 3]; batch["meta"]

`decode(sample)` turns one raw sample (`__key__`, `hq.mp4`, `lq.mp4`, `json` bytes) into
frames, the LQ resized to the HQ size as training uses it, so every sample of a run has the
same shape and `.batched()` stacks them (windows are exactly `--window` frames; a clip's
shorter tail is dropped). `mp4_handler` is the per-member form for `.decode(...)`, giving
each mp4 as stored (a BFVR LQ at its own, random, low resolution).
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Mapping

import numpy as np

from stc.core import storage
from stc.core.storage import Location
from stc.core.video import VideoError, resize_frames
from stc.degrade.codec import decode_h264, decode_video_bytes, encode_lossless_rgb
from stc.degrade.recipe import replay
from stc.degrade.shards import LQ_LOSSLESS, LQ_LOWRES, LQ_REPLAY, ShardWriter
from stc.manifests.io import new_part_name

TAR_GLOB = "shard-*.tar"
CONTAINER = "mp4"
# The manifest fields a sample's json carries (the rest of a row is bytes or bookkeeping).
JSON_FIELDS = ("pair_id", "clip_id", "recipe", "seed", "window", "start_frame", "num_frames",
               "fps", "width", "height", "hq_format", "lq_format", "lq_stream_width",
               "lq_stream_height", "lq_up_interp")


def sample_key(pair_id: str) -> str:
    """A tar key for a pair: WebDataset splits a member name at its first dot."""
    return pair_id.replace("/", "_").replace(".", "-")


def mux_mp4(h264: bytes, fps: float, what: str) -> bytes:
    """A raw H.264 stream in an mp4 container, stream-copied (the frames do not change).

    A raw stream has no timestamps, and `ffmpeg -c copy` leaves B-frames without them
    (readers then drop or misorder frames), so each packet's display position is found by
    decoding once with the decode index as pts; the mp4 gets dts = decode index and
    pts = display index + reorder delay, in units of 1/fps."""
    import av

    rate = Fraction(fps or 25.0).limit_denominator(1001)
    try:
        with av.open(io.BytesIO(h264), format="h264") as src:
            packets = [(bytes(p), p.is_keyframe) for p in src.demux(video=0) if p.size]
        ctx = av.CodecContext.create("h264", "r")
        shown: list[int] = []
        for d, (data, _) in enumerate(packets):
            p = av.Packet(data)
            p.pts = p.dts = d
            shown += [f.pts for f in ctx.decode(p)]
        shown += [f.pts for f in ctx.decode(None)]
        if sorted(shown) != list(range(len(packets))):
            raise VideoError(f"{what}: {len(packets)} packets gave {len(shown)} frames; "
                             "cannot time them for mp4")
        display = {d: k for k, d in enumerate(shown)}
        delay = max(d - k for d, k in display.items())
        with tempfile.TemporaryDirectory(prefix="stc-mux-") as tmp:
            path = Path(tmp) / "v.mp4"
            with av.open(io.BytesIO(h264), format="h264") as src, \
                    av.open(str(path), "w", format="mp4",
                            options={"movflags": "+faststart", "fflags": "+bitexact"}) as out:
                stream = out.add_stream_from_template(src.streams.video[0])
                stream.time_base = 1 / rate
                for d, (data, key) in enumerate(packets):
                    p = av.Packet(data)
                    p.stream, p.time_base = stream, 1 / rate
                    p.pts, p.dts, p.is_keyframe = display[d] + delay, d, key
                    out.mux(p)
            return path.read_bytes()
    except av.error.FFmpegError as exc:
        raise VideoError(f"{what}: muxing into mp4 failed ({exc})") from None


def decode_mp4(data: bytes, what: str) -> np.ndarray:
    """Every frame of an in-memory video file as [T, H, W, 3] uint8 RGB."""
    return decode_video_bytes(data, what)


def to_sample(row: Mapping[str, Any]) -> dict[str, Any]:
    """A shard row (raw streams, as `degrade_clip` makes it) -> the same row with mp4 bytes
    in `hq`/`lq` and `container` = mp4; runs in the worker, next to the degradation."""
    what = f"pair {row['pair_id']}"
    fps = float(row["fps"])
    out = dict(row)
    out["hq"] = mux_mp4(row["hq"], fps, f"{what} HQ")
    if row["lq_format"] == LQ_REPLAY:
        # No stc on the reading side to replay brightness parameters: store the frames.
        lq = replay(decode_h264(row["hq"], f"{what} HQ"), json.loads(row["params"]))
        out["lq"] = mux_mp4(encode_lossless_rgb(lq, fps, what=f"{what} LQ"), fps, f"{what} LQ")
        out.update(lq_format=LQ_LOSSLESS, lq_stream_width=row["width"],
                   lq_stream_height=row["height"], lq_up_interp=None)
    else:
        out["lq"] = mux_mp4(row["lq"], fps, f"{what} LQ")
    out["container"] = CONTAINER
    return out


def decode_sample(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) of a sample read back from a tar, each uint8 [T, H, W, 3] RGB: the frames
    `degrade.shards.decode_pair` gives for the same pair in a Parquet shard."""
    what = f"pair {row['pair_id']}"
    hq = decode_mp4(row["hq"], f"{what} HQ")
    lq = decode_mp4(row["lq"], f"{what} LQ")
    if row["lq_format"] == LQ_LOWRES:
        lq = resize_frames(lq, row["width"], row["height"], row["lq_up_interp"])
    elif row["lq_format"] != LQ_LOSSLESS:
        raise ValueError(f"{what}: unknown lq_format {row['lq_format']!r} in a tar shard; upgrade stc")
    if lq.shape != hq.shape:
        raise ValueError(f"{what}: LQ {lq.shape} and HQ {hq.shape} differ; the shard is damaged")
    return lq, hq


def decode(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A raw webdataset sample -> {"__key__", "lq", "hq": uint8 [T, H, W, 3] RGB of the HQ
    size, "meta": the json}; the frames `PairDataset` gives for the pair."""
    meta = json.loads(sample["json"])
    row = {**meta, "params": json.dumps(meta.get("params")), "hq": sample["hq.mp4"],
           "lq": sample["lq.mp4"]}
    lq, hq = decode_sample(row)
    return {"__key__": sample.get("__key__"), "lq": lq, "hq": hq, "meta": meta}


def mp4_handler(key: str, data: bytes) -> np.ndarray | None:
    """A `wds.WebDataset(...).decode(mp4_handler)` handler: an mp4 member's frames as stored
    (uint8 [T, H, W, 3] RGB); other members are left to the next handler."""
    if not key.lower().endswith(".mp4"):
        return None
    return decode_mp4(data, key)


def dataset(urls: list[str] | str, shuffle: int = 0, seed: int = 0):
    """A `webdataset.WebDataset` over stc tar shards that yields `decode`d samples: shards
    split over nodes and loader workers (each pair read once per epoch; a worker without a
    shard yields nothing rather than failing), optional sample shuffling in a buffer."""
    import webdataset as wds

    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False,
                        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                        seed=seed)
    if shuffle:
        ds = ds.shuffle(shuffle)
    return ds.map(decode)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(rows: list[Mapping[str, Any]]) -> bytes:
    """One shard: for each row, KEY.hq.mp4, KEY.json, KEY.lq.mp4 (sorted by extension, as
    WebDataset writers do)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            key = sample_key(row["pair_id"])
            meta = {k: row[k] for k in JSON_FIELDS}
            meta["params"] = json.loads(row["params"])
            _member(tar, f"{key}.hq.mp4", row["hq"])
            _member(tar, f"{key}.json", json.dumps(meta).encode())
            _member(tar, f"{key}.lq.mp4", row["lq"])
    return buf.getvalue()


class TarShardWriter(ShardWriter):
    """`degrade.shards.ShardWriter` writing tar shards: the same buffering and add/flush
    contract (flush returns (shard path relative to out, sample index, extra) once the tar
    exists)."""

    pattern = TAR_GLOB

    def _keep(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        if row.get("container") != CONTAINER:
            raise ValueError(f"pair {row['pair_id']}: tar shards take mp4 samples (to_sample)")
        return row

    def _write(self, rows: list[Mapping[str, Any]]) -> Location:
        path = storage.join(self.dir, new_part_name("shard").replace(".parquet", ".tar"))
        storage.write_bytes(path, tar_bytes(rows))
        return path


class TarShardReader:
    """Random access to the samples of one tar shard (local or a URL): the member headers
    are indexed once, then a sample is three reads at known offsets."""

    def __init__(self, loc: Location):
        self.loc = loc
        self._file: IO[bytes] = storage.open_input(loc)
        self._samples: list[dict[str, tuple[int, int]]] = []
        keys: dict[str, int] = {}
        with tarfile.open(fileobj=self._file, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                if key not in keys:
                    keys[key] = len(self._samples)
                    self._samples.append({})
                self._samples[keys[key]][ext] = (m.offset_data, m.size)

    def __len__(self) -> int:
        return len(self._samples)

    def _read(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(size)

    def row(self, index: int) -> dict[str, Any]:
        """Sample `index` as a row for `decode_sample` (json fields, mp4 bytes)."""
        members = self._samples[index]
        if not {"hq.mp4", "lq.mp4", "json"} <= set(members):
            raise ValueError(f"{self.loc}: sample {index} lacks hq.mp4, lq.mp4 or json; "
                             "the shard is damaged: rerun stc degrade into a new folder")
        row = json.loads(self._read(*members["json"]))
        row["params"] = json.dumps(row["params"])
        row["hq"] = self._read(*members["hq.mp4"])
        row["lq"] = self._read(*members["lq.mp4"])
        row["container"] = CONTAINER
        return row

    def close(self) -> None:
        self._file.close()
