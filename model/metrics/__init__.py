"""Video restoration metrics for `stc eval`, one module per idea.

- image.py: PSNR and SSIM (BasicSR conventions; luma by default, see EvalConfig.color)
- face.py: AKD, IDS, Face-Cons on dlib landmarks and face embeddings
- flow.py: flow_epe, motion agreement of pred with GT (OpenCV DIS; RAFT as TorchScript)
- lpips.py: LPIPS from local lpips/torchvision weight files
- fvd.py: FVD over the whole run from a local I3D TorchScript file
- video.py: streaming evaluation of one (pred, GT) pair -> one row of EVAL_SCHEMA
"""

from stc.model.metrics.config import EvalConfig
from stc.model.metrics.schema import EVAL_SCHEMA, METRICS
from stc.model.metrics.video import VideoEvaluator, evaluate_pair

__all__ = ["EVAL_SCHEMA", "METRICS", "EvalConfig", "VideoEvaluator", "evaluate_pair"]
