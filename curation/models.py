"""Where the packaged dlib models live (inside `face-recognition-models`).

Found through importlib rather than by importing the package, whose import needs
pkg_resources and prints a deprecation warning in every worker.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"
FACE_EMBEDDER = "dlib_face_recognition_resnet_model_v1.dat"


@functools.lru_cache(maxsize=None)
def dlib_model_path(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the dlib models package is missing: pip install face-recognition-models==0.3.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall face-recognition-models==0.3.0")
    return path
