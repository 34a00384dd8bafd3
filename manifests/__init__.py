"""Typed data contracts: Parquet manifest schemas, their readers and writers, and the
typed YAML config loader every pipeline uses."""
