"""``ccarchive serve``: run the sidecar beside cc-backend with cc-backend's config.json.

Flags override the ``ccarchive`` section of the file and the ``CCARCHIVE_*`` environment;
``--set KEY=VALUE`` reaches any key of that section (VALUE is JSON, or else a plain string).
``--check`` validates everything and prints the effective settings (secrets masked) without
starting; ``--probe`` also asks every dependency once (metric sources, NATS, archive, job DB, hook
command) and prints one line per check.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

_FLAGS = (("listen", "listen"), ("state_db", "state-db"), ("shutdown_timeout", "shutdown-timeout"),
          ("grace_period", "grace-period"), ("env_file", "env-file"))


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=os.environ.get("CCARCHIVE_CONFIG", "./config.json"), metavar="FILE",
                   help="cc-backend's config.json (default: $CCARCHIVE_CONFIG or ./config.json)")
    p.add_argument("--listen", metavar="HOST:PORT", help="HTTP address (ccarchive.listen, default 127.0.0.1:8090)")
    p.add_argument("--state-db", metavar="PATH", help="ccarchive's state file (default beside the job DB)")
    p.add_argument("--shutdown-timeout", metavar="DURATION", help="wait this long for queued jobs at SIGTERM")
    p.add_argument("--grace-period", metavar="DURATION",
                   help="reconciler: archive jobs stopped longer ago than this (e.g. 300, 5m)")
    p.add_argument("--env-file", metavar="FILE", help="dotenv file with JWT_PUBLIC_KEY (cc-backend's .env)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any key of the ccarchive section, e.g. --set reconcile-interval=30s")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration, print it (secrets masked) and exit")
    p.add_argument("--probe", action="store_true",
                   help="validate as --check, then, instead of printing the settings, query every metric source "
                        "once, connect to NATS, read and test-write the archive, read the job DB and find the "
                        "hook command (each within 5 s); one line per check, exit code 1 if any failed")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as ``load_config`` overrides (``"<flag>=<key>": value``)."""
    from ..config import ConfigError

    out: dict[str, Any] = {}
    for attr, key in _FLAGS:
        value = getattr(args, attr, None)
        if value is not None:
            out[f"--{key}={key}"] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key = key.removeprefix("ccarchive.")
        out[f"--set {key}={key}"] = _value(value)
    if getattr(args, "log_format", "plain") != "plain":
        out["--log-format=log-format"] = args.log_format
    if getattr(args, "verbose", 0):
        out["-v=log-level"] = "debug" if args.verbose > 1 else "info"
    return out


def _check_extra() -> None:
    import importlib.util

    from ..config import ConfigError

    missing = [m for m in ("prometheus_client", "nats", "jwt", "cryptography") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ccarchive serve needs {', '.join(missing)}: pip install 'ccarchive[service]'")


def run(name: str, args: argparse.Namespace) -> int:
    from ..config import load_config

    _check_extra()
    config = load_config(args.config, overrides=overrides_from_args(args))
    if args.check or args.probe:
        from ..config import mask_secrets
        from ..service.serve import check_backends, load_hooks

        config.worker_config()
        load_hooks(config)
        if args.probe:
            return _probe(config)
        check_backends(config)
        print(json.dumps(mask_secrets(config), indent=2))
        return 0
    from ..service.serve import run as serve

    return serve(config)


def _probe(config: Any) -> int:
    """One line per check: ``ok: ...`` on stdout, failures on stderr; exit code 1 if any failed."""
    import sys

    from ..service.probe import run_probes

    results = run_probes(config)
    for r in results:
        if r.ok:
            print(f"ok: {r.line()}")
        else:
            print(f"ccarchive serve: probe failed: {r.line()}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m ccarchive.cli.serve_cmd ARGS``: the same as ``ccarchive serve ARGS``."""
    import sys

    from .main import COMMANDS
    from .main import main as ccarchive_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "serve" in COMMANDS:
        return ccarchive_main(["serve", *argv])
    from ..errors import CcArchiveError
    from ..logs import setup_logging

    parser = argparse.ArgumentParser(prog="ccarchive serve", description=__doc__)
    add_arguments("serve", parser)
    args = parser.parse_args(argv)
    setup_logging(0, "plain")
    try:
        return run("serve", args)
    except CcArchiveError as e:
        print(f"ccarchive serve: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
