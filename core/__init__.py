"""The bottom layer every package may use: typed YAML configs, video I/O (probe, decode,
encode), the Ray runtime, file-system helpers and the table of on-disk names."""
