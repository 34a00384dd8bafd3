"""Command-line options shared by several `stc` subcommands."""

from __future__ import annotations

import argparse

from stc.core.runtime import RayOptions


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", default=None,
                       help="address of an existing Ray cluster, e.g. ray://head:10001 or "
                            "head:6379 (default: start a local one on 127.0.0.1)")
    group.add_argument("--num-cpus", type=positive_int, default=None,
                       help="CPUs for the local Ray cluster (default: all)")
    group.add_argument("--verbose", action="store_true",
                       help="show Ray's own messages on the console too")


def ray_options(args: argparse.Namespace) -> RayOptions:
    return RayOptions(getattr(args, "address", None), getattr(args, "num_cpus", None),
                      getattr(args, "verbose", False))
