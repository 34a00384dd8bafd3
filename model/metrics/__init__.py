"""Video restoration metrics for `stc eval`, one module per idea: the paper's (Sec. 4.1,
Table 1) as it defines them, and stc's earlier variants as extra columns (schema.py).

- image.py: PSNR and SSIM (BasicSR conventions; RGB by default as the paper, luma as psnr_y)
- face.py: AKD, IDS, Face-Cons (first frame vs the rest) on dlib landmarks and embeddings
- flow.py: Flow-Score (mean flow magnitude of the restored video), flow_epe vs GT (extra)
- lpips.py: LPIPS from local lpips/torchvision weight files, checked against the package
- fvd.py: FVD over the whole run from a local I3D TorchScript file
- video.py: streaming evaluation of one (pred, GT) pair -> one row of EVAL_SCHEMA
"""

from stc.model.metrics.config import EvalConfig
from stc.model.metrics.schema import EVAL_SCHEMA, METRICS
from stc.model.metrics.video import VideoEvaluator, evaluate_pair

__all__ = ["EVAL_SCHEMA", "METRICS", "EvalConfig", "VideoEvaluator", "evaluate_pair"]
