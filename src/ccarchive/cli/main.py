"""The ``ccarchive`` command: a table of subcommands, imported only when they run.

Help and dispatch import no command module, so ``ccarchive --help`` stays fast and the spawned
archiving worker (which re-imports ``__main__``) does not pay for numba or pyarrow twice.  One
error boundary turns ccarchive's exceptions into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

#: name -> (module under ccarchive.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve_cmd", "run the sidecar beside cc-backend: REST stop_job, NATS, reconciler, /metrics"),
    "demo": ("demo", "create a job DB of synthetic jobs and archive them through the pipeline"),
    "archive": ("pipeline_cmds", "archive jobs of a cc-backend job DB (one job, or all stopped jobs in a time range)"),
    "retry": ("pipeline_cmds", "re-archive jobs whose archiving failed (monitoring_status 2)"),
    "status": ("pipeline_cmds", "job DB archiving status: pending, failures with reasons, lag"),
    "import": ("archive_cmds", "import meta.json + data.json files into an archive, recomputing statistics"),
    "ls": ("archive_cmds", "list the jobs of an archive"),
    "show": ("archive_cmds", "show one archived job: metadata, statistics and series"),
    "convert": ("convert_cmd", "copy an archive into another backend (file, S3, SQLite, Parquet), resumable"),
    "verify": ("archive_cmds", "check an archive against the v3 format and the cc-lib JSON schemas"),
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccarchive",
        description="Archive HPC job metric data into ClusterCockpit's job archive v3.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=("plain", "json"), default="plain", help="log line format")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(_module=module)
        _command_module(module).add_arguments(name, p)
    return parser


def _version() -> str:
    from .. import __version__

    return f"ccarchive {__version__}"


def _command_module(module: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"ccarchive.cli.{module}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from ..logs import setup_logging

    setup_logging(args.verbose, args.log_format)
    from ..errors import CcArchiveError

    try:
        return int(_command_module(args._module).run(args.command, args) or 0)
    except CcArchiveError as e:
        print(f"ccarchive {args.command}: error: {e}", file=sys.stderr)
        logging.getLogger("ccarchive").debug("traceback", exc_info=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"ccarchive {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `ccarchive ls | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
