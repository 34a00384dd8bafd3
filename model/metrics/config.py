"""Settings of `stc eval`, as a typed dataclass (YAML via `--config FILE`, flags override).

Sources: [paper] stc_cvpr2025 Sec. 4.1 ("Evaluation" and "Datasets"), [stc] stc's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stc.curation.config import FaceConfig, SamplingConfig


@dataclass
class EvalConfig:
    # PSNR and SSIM planes: "rgb" (mean over R, G, B) [paper Table 1 names no luma conversion;
    # stc follows issue 14's reading of the VFHQ-Test protocol] or "y", BT.601 luma as
    # BasicSR's test_y_channel [stc option]. The luma values are always also in psnr_y/ssim_y.
    color: Literal["y", "rgb"] = "rgb"
    # Frames compared per video, from the first [paper Sec. 4.1: "the first 24 frames (1s)
    # of each sequence"]; 0 = every frame.
    max_frames: int = 24
    psnr_cap: float = 100.0        # [stc] dB given to a frame identical to its GT (MSE 0), so means stay finite
    # Frames AKD / IDS / Face-Cons look at. None [stc]: sampled as curation samples faces
    # (`face_sampling`: ~2 per second, the first and the last frame always, at most 64),
    # because dlib costs ~0.35 s per frame pair; Face-Cons's anchor x_1 is always frame 0.
    # k >= 1: every k-th frame (1 = every frame, the paper's t = 2..T exactly); 0: off.
    face_stride: int | None = None
    face_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    lpips_stride: int = 1          # [stc] LPIPS on every k-th frame (1 = all, as the paper)
    flow_max_side: int = 512       # [stc] DIS flow runs at most at this size; flows are reported in compared pixels
    fvd_clip_frames: int = 16      # [stc] FVD: each video is cut into clips of this many frames
    fvd_size: int = 224            # I3D input size
    face: FaceConfig = field(default_factory=FaceConfig)
    lpips: str | None = None       # LPIPS weights (lpips-package state dict, see lpips.py)
    lpips_backbone: str | None = None  # torchvision alexnet/vgg16 file when `lpips` holds only the linear layers
    fvd: str | None = None         # I3D TorchScript file (see fvd.py)
    raft: str | None = None        # RAFT TorchScript file (see flow.py) [paper: RAFT]; None: OpenCV DIS

    def __post_init__(self) -> None:
        if self.color not in ("y", "rgb"):
            raise ValueError(f"color must be 'y' or 'rgb', not {self.color!r}")
        if self.face_stride is not None and self.face_stride < 0:
            raise ValueError("face_stride must be >= 0 (0 turns face metrics off)")
        if self.max_frames < 0:
            raise ValueError("max_frames must be >= 0 (0 = every frame)")
        for name in ("lpips_stride", "fvd_clip_frames", "fvd_size", "flow_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def faces_on(self) -> bool:
        return self.face_stride != 0
