"""Settings of `stc eval`, as a typed dataclass (YAML via `--config FILE`, flags override)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stc.curation.config import FaceConfig


@dataclass
class EvalConfig:
    # PSNR and SSIM on the BT.601 luma "y" (BasicSR's test_y_channel convention, what most
    # face/video restoration tables report) or averaged over the "rgb" channels.
    color: Literal["y", "rgb"] = "y"
    psnr_cap: float = 100.0        # dB given to a frame identical to its GT (MSE 0), so means stay finite
    face_stride: int = 1           # AKD / IDS / Face-Cons on every k-th frame (dlib is the slow part); 0: off
    lpips_stride: int = 1          # LPIPS on every k-th frame
    flow_max_side: int = 512       # DIS flow runs at most at this size; EPE is reported in GT pixels
    fvd_clip_frames: int = 16      # FVD: each video is cut into clips of this many frames
    fvd_size: int = 224            # I3D input size
    face: FaceConfig = field(default_factory=FaceConfig)
    lpips: str | None = None       # LPIPS weights (lpips-package state dict, see lpips.py)
    lpips_backbone: str | None = None  # torchvision alexnet/vgg16 file when `lpips` holds only the linear layers
    fvd: str | None = None         # I3D TorchScript file (see fvd.py)
    raft: str | None = None        # RAFT TorchScript file (see flow.py); None: OpenCV DIS

    def __post_init__(self) -> None:
        if self.color not in ("y", "rgb"):
            raise ValueError(f"color must be 'y' or 'rgb', not {self.color!r}")
        if self.face_stride < 0:
            raise ValueError("face_stride must be >= 0 (0 turns face metrics off)")
        for name in ("lpips_stride", "fvd_clip_frames", "fvd_size", "flow_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
