"""The face restore engine of `stc enhance`: tracks cut at shots, steady per-frame crops,
chunked restoration with crossfades, soft colour-matched paste-back (`engine`)."""
