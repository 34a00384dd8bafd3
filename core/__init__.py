"""The bottom layer every package may use: typed YAML configs, video I/O (probe, decode,
encode), the Ray runtime, file-system helpers and the table of on-disk names."""

# Registers a fork handler before any decode can happen: see core/fork_safety.py.
from stc.core import fork_safety as _fork_safety  # noqa: E402,F401
