"""Command-line options shared by several `stc` subcommands."""

from __future__ import annotations

import argparse


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "at least 1")
non_negative_int = _int_at_least(0, "0 or more")


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", default=None,
                       help="address of an existing Ray cluster, e.g. ray://head:10001 or "
                            "head:6379 (default: start a local one on 127.0.0.1)")
    group.add_argument("--num-cpus", type=positive_int, default=None,
                       help="CPUs for the local Ray cluster (default: all)")
    group.add_argument("--verbose", action="store_true",
                       help="show Ray's own messages on the console too")
