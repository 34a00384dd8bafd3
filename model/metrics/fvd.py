"""FVD: Fréchet distance between I3D features of pred clips and GT clips.

FVD is a property of a set of videos, not of one: every video is cut into
non-overlapping clips of `clip_frames` frames (a shorter tail is dropped), each clip is
resized to `size` x `size`, scaled to [-1, 1] and embedded by the user's I3D; the result
is one number for the whole run, reported in the summary (not per video). With fewer
clips than feature dimensions the covariances are rank-deficient: the number is then only
comparable between runs over the same clips.

The I3D must be a TorchScript file taking float [N, 3, T, H, W]. StyleGAN-V's
`i3d_torchscript.pt` (the one common FVD code uses) is recognised from its forward
signature and called with rescale=False, resize=False, return_features=True; any other
module is called with the video alone and must return features [N, D].
"""

from __future__ import annotations

import cv2
import numpy as np

from stc.core.tensors import to_tensor
from stc.model.metrics.weights import load_torchscript

HINT = ("FVD needs an I3D as a TorchScript file (e.g. StyleGAN-V's i3d_torchscript.pt, the one "
        "common FVD code uses) taking float videos [N, 3, T, H, W] in [-1, 1]; no I3D ships with stc.")


class I3DFeatures:
    def __init__(self, path: str, clip_frames: int = 16, size: int = 224):
        self.model = load_torchscript(path, "FVD (I3D)", HINT)
        self.clip_frames = clip_frames
        self.size = size
        try:
            names = {a.name for a in self.model.forward.schema.arguments}
        except AttributeError:
            names = set()
        self.kwargs = ({"rescale": False, "resize": False, "return_features": True}
                       if {"rescale", "resize", "return_features"} <= names else {})

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """One frame as the I3D wants it (the clip buffer keeps these, not full frames)."""
        return cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        """Features [D] of one clip of prepared frames."""
        import torch

        x = to_tensor(np.stack(frames))[None]
        with torch.inference_mode():
            out = self.model(x, **self.kwargs)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.reshape(-1).double().numpy()


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of feature rows a [N, D], b [M, D].

    Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric PSD form numpy's
    eigh handles (no scipy needed).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FVD needs at least 2 clips on each side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _sqrtm_psd(s_a)
    cross = np.linalg.eigvalsh(root @ s_b @ root)
    tr_cross = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross))
