"""Curation stages (paper Sec. 4.1 and 6): probe, shot cuts, face detection, face tracks,
face-proportion crop, side-face rule, text detection and motion intensity, each usable on
its own; `clip.ClipCurator` runs them over one source video."""
