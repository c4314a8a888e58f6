"""The ``ccarchive`` command: a table of subcommands, imported only when they run.

Help and dispatch import no command module, so ``ccarchive --help`` stays fast and the spawned
archiving worker (which re-imports ``__main__``) does not pay for numba or pyarrow twice.  One
error boundary turns ccarchive's exceptions (and file system errors, which name their file) into
one line on stderr and a non-zero exit code (2 for usage errors, argparse's included); anything
unexpected still gives one line, naming it an internal error, with the traceback only at ``-vv``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from ..errors import CcArchiveError, InputError

#: name -> (module under ccarchive.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve_cmd", "run the sidecar beside cc-backend: REST stop_job, NATS, reconciler, /metrics"),
    "demo": ("demo", "create a job DB of synthetic jobs and archive them through the pipeline"),
    "archive": ("pipeline_cmds", "archive jobs of a cc-backend job DB (one job, or all stopped jobs in a time range)"),
    "retry": ("pipeline_cmds", "re-archive jobs whose archiving failed (monitoring_status 2)"),
    "status": ("pipeline_cmds", "job DB archiving status: pending, failures with reasons, lag"),
    "import": ("archive_cmds", "import meta.json + data.json files into an archive, recomputing statistics"),
    "ls": ("archive_cmds", "list the jobs of an archive"),
    "jobs": ("jobs_cmd", "the jobs of an archive as a table (statistics as columns): text, CSV, JSON or Parquet"),
    "show": ("archive_cmds", "show one archived job: metadata, statistics and series"),
    "convert": ("convert_cmd", "copy an archive into another backend (file, S3, SQLite, Parquet), resumable"),
    "verify": ("archive_cmds", "check an archive against the v3 format and the cc-lib JSON schemas"),
    "plot": ("plot_cmd", "plot one archived job's metrics over time, or its roofline (PNG, SVG, PDF)"),
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(InputError):
    """The command line is incomplete or contradictory: exit code 2, like argparse's errors
    (recognised by its ``reason``, so a second import of this module under ``-m`` agrees)."""

    reason = "usage"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (the usage text is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


#: Optional packages -> (who needs them, the extra that installs them).
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("s3fs", "aiobotocore", "botocore"), ("s3:// archives need", "s3")),
    **dict.fromkeys(("prometheus_client", "nats", "jwt", "cryptography"), ("ccarchive serve needs", "service")),
    "matplotlib": ("ccarchive plot needs", "plot"),
}
_MODULE_NAMED = re.compile(r"No module named '([\w.]+)'|Install (\w+)")


def missing_extra(e: ImportError) -> str | None:
    """What to install when ``e`` (or an error it was raised from) is a missing optional package."""
    seen: set[int] = set()
    err: BaseException | None = e
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ImportError):
            names = [err.name or ""] + [a or b for a, b in _MODULE_NAMED.findall(str(err))]
            for name in names:
                top = name.split(".")[0]
                if top in OPTIONAL_PACKAGES:
                    needed_by, extra = OPTIONAL_PACKAGES[top]
                    return f"{needed_by} the package {top}, which is not installed: pip install 'ccarchive[{extra}]'"
        err = err.__cause__ or err.__context__
    return None


def one_line(text: str) -> str:
    """``text`` with line breaks turned into spaces: every message to a user is one line."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ccarchive",
        description="Archive HPC job metric data into ClusterCockpit's job archive v3.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=("plain", "json"), default="plain", help="log line format")
    parser.add_argument("-V", "--version", action=_VersionAction,
                        help="print the version, git commit (of a checkout), Python and numba versions")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(_module=module)
        _command_module(module).add_arguments(name, p)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: computed only when asked for (argparse's own action formats it up front)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from ..buildinfo import version_text

        print(version_text())
        parser.exit(EXIT_OK)


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

    try:
        setup_logging(args.verbose, args.log_format)
        return int(_command_module(args._module).run(args.command, args) or 0)
    except CcArchiveError as e:
        print(f"ccarchive {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        logging.getLogger("ccarchive").debug("traceback", exc_info=True)
        return EXIT_USAGE if e.reason == UsageError.reason else EXIT_ERROR
    except KeyboardInterrupt:
        print(f"ccarchive {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `ccarchive ls | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        if not e.filename:  # not about a file: nothing to tell the user beyond the exception itself
            return _internal_error(args, e)
        print(f"ccarchive {args.command}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as e:
        hint = missing_extra(e)
        if hint is None:
            return _internal_error(args, e)
        print(f"ccarchive {args.command}: error: {hint}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - the last resort: a bug must still not greet users with a traceback
        return _internal_error(args, e)


def _internal_error(args: argparse.Namespace, e: BaseException) -> int:
    """One line for an exception nobody expected; the traceback follows only with ``-vv``."""
    print(f"ccarchive {args.command}: internal error: {type(e).__name__}: {one_line(str(e))} "
          f"(run with -vv for the traceback)", file=sys.stderr)
    if args.verbose >= 2:
        traceback.print_exception(e)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
