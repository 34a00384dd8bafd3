"""Stage II: the LQ encoder and the two code-lookup transformers, their config, trainer and
incremental curricula."""
