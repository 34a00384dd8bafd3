"""The two-stage model: `stage1` (3D-VQGAN with spatial-temporal codebooks), `stage2`
(LQ encoder, code-lookup transformers, curricula), `training` (the shared loop, checkpoints,
EMA, Ray Train) and `metrics` (evaluation)."""
