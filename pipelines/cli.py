"""The `stc` command line: one subcommand per pipeline.

Each module listed in COMMANDS has `add_parser(subparsers)`, which adds its subcommand
and sets `func(args) -> int` as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

from stc.core.config import ConfigError
from stc.core.extras import MissingExtra
from stc.core.crash import one_paragraph, write_crash_report
from stc.core.fs import DiskFull, OutputLocked, command_line, is_disk_full
from stc.core.runtime import RayUnavailable, WorkersFailed
from stc.core.storage import LeaseLost, unreachable_storage
from stc.manifests.schema import ManifestError

# Wrong input or settings: the user fixes the command (exit 2).
USAGE_ERRORS = (ConfigError, ManifestError, FileNotFoundError, OutputLocked, MissingExtra)
# The run could not go on; finished work is kept and a rerun resumes (exit 1).
RUN_ERRORS = (DiskFull, RayUnavailable, WorkersFailed, LeaseLost)

# In the order of the workflow: curate -> split -> degrade -> train -> enhance -> eval; stats audits.
COMMANDS = [
    "stc.pipelines.curate",
    "stc.pipelines.split",
    "stc.pipelines.degrade",
    "stc.pipelines.train",
    "stc.pipelines.weights",
    "stc.pipelines.enhance",
    "stc.pipelines.evaluate",
    "stc.pipelines.stats",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stc",
        description="Build video face restoration training data and train STC models.",
    )
    parser.add_argument("--version", action="version", version=f"stc {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("stc: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except USAGE_ERRORS as exc:
        print(f"stc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RUN_ERRORS as exc:
        print(f"stc {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last word: a paragraph and a report, no traceback
        if is_disk_full(exc):
            # A write outside the pipelines' own disk-full handling (settings, stats, a trainer).
            print(f"stc {args.command}: error: no space left on device ({exc}); free space and "
                  "rerun the same command to resume", file=sys.stderr)
            return 1
        report = write_crash_report(exc, command_line(), _version())
        what = unreachable_storage(exc) or one_paragraph(exc)
        where = f"the details are in {report} (attach it to a bug report)" if report else \
            "no crash report could be written"
        print(f"stc {args.command}: error: {what}\n  {where}", file=sys.stderr)
        return 1


def _version() -> str:
    try:
        return version("stc")
    except PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
