"""Command-line options shared by several `stc` subcommands."""

from __future__ import annotations

import argparse
import math
import sys


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

# Every generator a seed reaches (NumPy, torch, Python's random) takes it below 2^63.
SEED_LIMIT = 2 ** 63


def seed_int(text: str) -> int:
    value = non_negative_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2^63 ({SEED_LIMIT}), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (sizes, rates): 'nan', 'inf' and 0 are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
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


def add_space_check_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-space-check", dest="space_check", action="store_false",
                        help="start even when the output is estimated not to fit the free "
                             "space (a full disk still stops the run cleanly; rerun to resume)")


def print_next(commands: list[str]) -> None:
    """The commands that usually come next, printed last so they are what the user sees."""
    print("next:", file=sys.stderr)
    for c in commands:
        print(f"  {c}", file=sys.stderr)


def add_config_args(parser: argparse.ArgumentParser, what: str = "config") -> None:
    """--set and --print-config, the same on every command that takes a config."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one {what} value, e.g. --set a.b=0.5 (repeatable; "
                             "list items by index: steps.0.x=1)")
    parser.add_argument("--print-config", action="store_true",
                        help=f"print the resolved {what} (after --config and --set) as YAML "
                             "and exit")


def print_config(data: dict) -> None:
    import yaml

    print(yaml.safe_dump(data, sort_keys=False), end="")


def require(args: argparse.Namespace, command: str, *names: str) -> None:
    """Options a command needs unless it only prints its config."""
    missing = ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) in (None, [])]
    if missing:
        from stc.core.config import ConfigError

        names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        raise ConfigError(f"{command} needs {names} (see {command} --help)")
