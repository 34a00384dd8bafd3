"""The value degradations pass along: frames, plus how to rebuild them from bytes.

A BFVR step produces a low-resolution H.264 bitstream; its full-size frames are that
stream decoded and resized by `codec.resize_frames`, computed here on demand with the
very function the loader uses, so what is stored decodes to what was produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stc.core.video import resize_frames
from stc.degrade.codec import decode_h264


@dataclass
class Video:
    fps: float
    width: int                 # output (HQ) size
    height: int
    _frames: np.ndarray | None = None
    bitstream: bytes | None = None    # low-res H.264 when the last step was a compression
    lowres_width: int = 0
    lowres_height: int = 0
    up_interp: str = "bicubic"

    @classmethod
    def from_frames(cls, frames: np.ndarray, fps: float) -> "Video":
        return cls(fps=fps, width=frames.shape[2], height=frames.shape[1], _frames=frames)

    @classmethod
    def from_bitstream(cls, data: bytes, fps: float, width: int, height: int,
                       up_interp: str) -> "Video":
        return cls(fps=fps, width=width, height=height, bitstream=data, up_interp=up_interp)

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            self._frames = lq_from_bitstream(self.bitstream, self.width, self.height, self.up_interp)
        return self._frames


def lq_from_bitstream(data: bytes, width: int, height: int, up_interp: str) -> np.ndarray:
    """Low-res stream -> full-size frames: decode, then the deterministic up-resize."""
    low = decode_h264(data, "low-res LQ stream")
    return resize_frames(low, width, height, up_interp)
