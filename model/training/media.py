"""Clips in TensorBoard: what a validation step looks like, not only its numbers.

`write_clip` puts a uint8 clip [T, H, W, 3] (typically LQ | restored | GT side by side)
into a TensorBoard event file twice: its first frame as an image, and the whole clip as an
animated GIF in the Images tab (TensorBoard shows GIFs as they are; its own `add_video`
needs moviepy, which stc does not install).
"""

from __future__ import annotations

import io

import numpy as np


def side_by_side(*clips: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 clips [T, H, W, 3] of one size -> one clip with them left to right, split by
    `gap` black columns."""
    t, h = clips[0].shape[:2]
    bar = np.zeros((t, h, gap, 3), np.uint8)
    parts = []
    for i, c in enumerate(clips):
        parts += [c] if i == 0 else [bar, c]
    return np.concatenate(parts, axis=2)


def gif_bytes(clip: np.ndarray, fps: float = 8.0) -> bytes:
    from PIL import Image

    frames = [Image.fromarray(f) for f in clip]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=int(round(1000 / fps)), loop=0)
    return buf.getvalue()


def write_clip(writer, tag: str, clip: np.ndarray, step: int, fps: float = 8.0) -> None:
    """`clip` uint8 [T, H, W, 3] as `tag/frame` (first frame) and `tag/clip` (GIF)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    writer.add_image(f"{tag}/frame", clip[0], step, dataformats="HWC")
    t, h, w = clip.shape[:3]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(clip, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=f"{tag}/clip",
                                                                       image=image)]), step)
