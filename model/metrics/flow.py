"""Temporal flow metrics.

- `flow_score` [paper Sec. 4.1, EvalCrafter's "Average Flow"]: the mean optical-flow
  magnitude of the restored video alone, no GT: mean over adjacent frame pairs (t, t+1) and
  pixels of ||F_pred(t->t+1)||_2, in pixels of the compared frames. Lower = steadier video
  (the paper's Flow-Score, lower is better). `flow_score_gt` is the same on GT: the motion the
  content really has, which a restoration need not go below.
- `flow_epe` [stc, extra]: stc's earlier score, the end-point error between pred's and GT's
  flow, mean over pairs and pixels of ||F_pred(t->t+1) - F_gt(t->t+1)||_2; 0 for a perfect
  pred, large for flicker, jitter or frames out of order.

The paper computes flow with RAFT [42]. RAFT runs here only from a user-given TorchScript
file: this build has no RAFT code (torchvision, which ships it, is not available), so a plain
state dict is refused with an explanation. Without one, flow comes from OpenCV's DIS
(preset MEDIUM, on luma, at most `max_side` pixels); the row's `flow_method` says which, and
the two give different absolute numbers.
"""

from __future__ import annotations

import cv2
import numpy as np

from stc.core.tensors import image_to_tensor
from stc.model.metrics.weights import load_torchscript

RAFT_HINT = ("Only a TorchScript RAFT is supported here (no RAFT implementation ships with stc "
             "and torchvision is unavailable): export one with torch.jit.trace/script whose "
             "forward(img1, img2) takes float [1, 3, H, W] in [-1, 1] and returns the flow "
             "[1, 2, H, W] (or a list of flows, last = final, as torchvision's RAFT), or drop "
             "--raft to use OpenCV DIS.")


class DISFlow:
    name = "dis"

    def __init__(self, max_side: int = 512):
        self.max_side = max_side
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow [H, W, 2] from RGB frame a to b, in a's pixels."""
        h, w = a.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
        if s < 1.0:
            size = (round(w * s), round(h * s))
            ga, gb = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (ga, gb))
        flow = self._dis.calc(ga, gb, None)
        if s < 1.0:
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / s
        return flow


class TorchScriptFlow:
    name = "raft"

    def __init__(self, path: str):
        self.model = load_torchscript(path, "RAFT", RAFT_HINT)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch

        def t(x: np.ndarray) -> torch.Tensor:
            return image_to_tensor(x)

        with torch.inference_mode():
            out = self.model(t(a), t(b))
        if isinstance(out, (list, tuple)):
            out = out[-1]
        if out.ndim != 4 or out.shape[1] != 2 or tuple(out.shape[2:]) != a.shape[:2]:
            raise ValueError(f"the RAFT TorchScript returned shape {tuple(out.shape)}, expected "
                             f"[1, 2, {a.shape[0]}, {a.shape[1]}]. {RAFT_HINT}")
        return out[0].permute(1, 2, 0).numpy().astype(np.float32)


def make_flow(raft: str | None, max_side: int = 512):
    return TorchScriptFlow(raft) if raft else DISFlow(max_side)


def magnitude(flow: np.ndarray) -> float:
    """Mean flow magnitude ||F||_2 over the pixels of one flow field [H, W, 2]."""
    return float(np.linalg.norm(flow, axis=-1).mean())


def endpoint_error(f_pred: np.ndarray, f_gt: np.ndarray) -> float:
    return float(np.linalg.norm(f_pred - f_gt, axis=-1).mean())
