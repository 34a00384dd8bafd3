"""Curation stages (paper Sec. 4.1 and 6): probe, face detection, face-proportion crop,
side-face rule, text detection and motion intensity, each usable on its own."""
