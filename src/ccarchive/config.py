"""Configuration from cc-backend's ``config.json`` plus a ``ccarchive`` section.

:func:`load_archiving_config` resolves what every archiving command needs (job DB, archive, metric
sources, worker settings) and is shared by ``ccarchive archive``, ``retry`` and ``serve``;
:func:`load_config` adds what only the sidecar needs (listen address, reconciler, hooks, NATS,
JWT key), so a one-off ``ccarchive archive --config`` never asks for the sidecar's settings.

Why read cc-backend's file instead of a config of our own: a sidecar that runs beside cc-backend
must use the same job DB, archive and metric stores, and a second copy of those settings drifts.
So ``main.db``, ``archive`` (kebab-case keys, as pkg/archive reads them), ``metric-store-external``,
``nats`` and ``main.api-subjects`` are taken as they are, and only what
cc-backend has no notion of lives in the ``ccarchive`` section (see :data:`CCARCHIVE_KEYS`).

Precedence, lowest first: defaults, the file (with cc-lib's ``"<name>-file"`` indirection: a
top-level key with exactly one ``-`` before ``file`` loads section ``<name>`` from that file),
environment (``CCARCHIVE_<KEY>`` for every ``ccarchive`` key, ``CCARCHIVE_JOB_DB`` for
``main.db``), then command-line overrides.  Relative paths are taken relative to the working
directory, as cc-backend does, so run the sidecar in cc-backend's directory.  Everything is checked
here, once, at start; each error names where the value came from and the key, e.g.
``config.json: archive.kind: unknown kind 'nfs' (file, s3, sqlite)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .names import shown

#: Keys of the ``ccarchive`` section and their defaults (docs/operations.md, section Configuration, explains each one;
#: durations are seconds or "30s", "5m", "2h", "1d"; ``reconcile-interval`` false = at start only,
#: ``nats-subject`` false = no NATS, None = ``main.api-subjects.subject-job-event``).
CCARCHIVE_KEYS: dict[str, Any] = {
    "listen": "127.0.0.1:8090", "state-db": None, "grace-period": "5m", "reconcile-interval": "1m",
    "reconcile-horizon": "90d", "retry": {}, "core-scope-max-nodes": 8, "resolution": 0, "formats": ["json"],
    "hooks": {}, "log-format": "plain", "log-level": "info", "shutdown-timeout": "60s", "sources": None,
    "nats-subject": None, "env-file": None, "parquet-url": None, "gzip-level": 3, "gzip-threads": None,
}
ARCHIVE_KINDS = ("file", "s3", "sqlite")
FORMATS = ("json", "parquet")
LOG_LEVELS = ("warning", "info", "debug")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class HookSettings:
    callables: list[str] = field(default_factory=list)
    command: str | None = None
    command_timeout_s: float = 60.0
    entry_points: bool = True


@dataclass
class NatsSettings:
    address: str
    subject: str
    username: str | None = None
    password: str | None = None
    creds_file: str | None = None


@dataclass
class ArchivingConfig:
    """What archiving needs, validated: job DB, archive, metric source and the worker's settings
    (shared by ``ccarchive archive``, ``retry`` and ``serve``)."""

    path: str
    job_db: str
    archive_kind: str
    archive_url: str
    storage_options: dict[str, Any]
    source: dict[str, Any]
    state_db: str
    max_attempts: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    #: longest pause between attempts while the archive's storage is full
    storage_retry_max_s: float
    core_scope_max_nodes: int
    resolution: int
    formats: list[str]
    #: the Parquet dataset (``parquet+URL``) when ``formats`` includes ``parquet``
    parquet_url: str | None
    gzip_level: int
    gzip_threads: int | None

    def worker_config(self, *, log_level: int = logging.WARNING, log_format: str = "plain") -> Any:
        """The picklable :class:`~ccarchive.worker.WorkerConfig` for the archiving worker."""
        import dataclasses

        from .worker import WorkerConfig

        names = {f.name for f in dataclasses.fields(WorkerConfig)}
        extra: dict[str, Any] = {}
        for key, value, default in (("resolution", self.resolution, 0),):
            if key in names:
                extra[key] = value
            elif value != default:
                raise ConfigError(f"{self.path}: ccarchive.{key}: {value!r} is not supported by this "
                                  f"ccarchive's archiving pipeline yet (only {default!r})")
        return WorkerConfig(job_db=self.job_db, archive_url=self.archive_url, state_db=self.state_db,
                            source=self.source, storage_options=self.storage_options,
                            core_scope_max_nodes=self.core_scope_max_nodes, log_level=log_level,
                            log_format=log_format, parquet_url=self.parquet_url,
                            gzip_level=self.gzip_level, gzip_threads=self.gzip_threads,
                            storage_retry_max_s=self.storage_retry_max_s,
                            parquet_storage_options=self._parquet_storage_options(), **extra)

    def _parquet_storage_options(self) -> dict[str, Any]:
        """An S3 dataset on the archive's S3 endpoint uses the archive's credentials."""
        if self.parquet_url and self.archive_kind == "s3" and self.parquet_url.startswith("parquet+s3://"):
            return dict(self.storage_options)
        return {}


@dataclass
class ServiceConfig(ArchivingConfig):
    """Everything ``ccarchive serve`` needs, validated: the shared settings plus the sidecar's own."""

    listen_host: str
    listen_port: int
    grace_period_s: float
    reconcile_interval_s: float | None
    reconcile_horizon_s: float
    hooks: HookSettings
    log_format: str
    log_level: str
    shutdown_timeout_s: float
    nats: NatsSettings | None
    jwt_public_key: str | None
    disable_authentication: bool
    api_allowed_ips: list[str]

    def worker_config(self, *, log_level: int | None = None, log_format: str | None = None) -> Any:
        """The worker's settings, logging as the sidecar is configured to."""
        level = {"debug": logging.DEBUG, "info": logging.INFO}.get(self.log_level, logging.WARNING)
        return super().worker_config(log_level=level if log_level is None else log_level,
                                     log_format=log_format or self.log_format)


def _parquet_url(v: _Values, wanted: bool) -> str | None:
    """``ccarchive.parquet-url``: required with ``formats: ["json", "parquet"]``, refused without."""
    url = v["parquet-url"]
    if not wanted:
        if url is not None:
            raise ConfigError(f"{v.what('parquet-url')}: set, but ccarchive.formats does not include \"parquet\"")
        return None
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{v.what('parquet-url')}: ccarchive.formats includes \"parquet\"; name the dataset "
                          f"(a directory or e.g. s3://bucket/jobs), got {url!r}")
    url = url.strip()
    if url.startswith("parquet+"):
        return url
    return "parquet+" + (url if "://" in url else str(Path(url).absolute()))


#: The longest duration a setting may have (100 years): beyond it a typo, and beyond what timers take.
MAX_DURATION_S = 100 * 365 * 86400


def parse_duration(value: Any, what: str) -> float:
    """Seconds from a number or a duration string such as ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration (seconds or e.g. \"5m\"), got {value!r}")
    seconds: float | None = None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{what}: must not be negative, got {value!r}")
        seconds = float(value) if isinstance(value, float) or value <= MAX_DURATION_S else math.inf
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and _DURATION.sub("", text) == "":
            seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    if seconds is not None:
        if not seconds <= MAX_DURATION_S:  # NaN, infinity and more than a lifetime alike
            raise ConfigError(f"{what}: expected a duration of at most {MAX_DURATION_S // 86400 // 365:.0f} years, "
                              f"got {shown(value)}")
        return seconds
    raise ConfigError(f"{what}: expected a duration (seconds or e.g. \"30s\", \"5m\", \"2h\", \"1d\"), "
                      f"got {value!r}")


def parse_listen(value: Any, what: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (all interfaces) or ``"[::1]:port"`` -> (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{what}: expected \"host:port\", got {value!r}")
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: invalid port in {value!r}")
    return host or "0.0.0.0", int(port)


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (cc-backend's ``.env``): quotes stripped, ``#`` comments."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _load_json(path: str, what: str) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return obj


def load_raw(path: str) -> dict[str, Any]:
    """The top-level sections of ``path`` with ``"<name>-file"`` keys replaced by the file's content."""
    top = _load_json(path, "config")
    for key in [k for k in top if k.endswith("-file") and k.count("-") == 1]:
        name = key[: -len("-file")]
        if name in top:
            raise ConfigError(f"{path}: both {name!r} and {key!r} are given; use one")
        if not isinstance(top[key], str):
            raise ConfigError(f"{path}: {key}: expected a file name, got {top[key]!r}")
        section_file = top.pop(key)
        section: Any = _load_json(section_file, f"{path}: {key}")
        top[name] = section
    return top


def _coerce_env(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class _Values:
    """The ``ccarchive`` settings merged from file, environment and overrides, with origins."""

    def __init__(self, path: str, section: Any, env: Mapping[str, str], overrides: Mapping[str, Any]):
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{path}: ccarchive: expected an object, got {section!r}")
        self.values: dict[str, Any] = dict(CCARCHIVE_KEYS)
        self.origin: dict[str, str] = {k: "default" for k in CCARCHIVE_KEYS}
        for key, value in (section or {}).items():
            self._set(key, value, path)
        for key in CCARCHIVE_KEYS:
            name = "CCARCHIVE_" + key.upper().replace("-", "_")
            if name in env:
                self.values[key], self.origin[key] = _coerce_env(env[name]), name
        for key, value in overrides.items():
            origin, _, key = key.partition("=") if "=" in key else ("override", "", key)
            self._set(key, value, origin)

    def _set(self, key: str, value: Any, origin: str) -> None:
        if key not in CCARCHIVE_KEYS:
            raise ConfigError(f"{origin}: ccarchive.{key}: unknown key (known: {', '.join(CCARCHIVE_KEYS)})")
        self.values[key], self.origin[key] = value, origin

    def what(self, key: str) -> str:
        return f"{self.origin[key]}: ccarchive.{key}"

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def int(self, key: str, minimum: int = 0) -> int:
        v = self.values[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{self.what(key)}: expected an integer >= {minimum}, got {v!r}")
        return v

    def duration(self, key: str) -> float:
        return parse_duration(self.values[key], self.what(key))

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        v = self.values[key]
        if v not in choices:
            raise ConfigError(f"{self.what(key)}: unknown value {v!r} ({', '.join(choices)})")
        return str(v)


def _archive(path: str, section: Any) -> tuple[str, str, dict[str, Any]]:
    """``archive`` section -> (kind, URL, fsspec storage options); for S3: s3fs ``key``/``secret``,
    ``endpoint_url``, ``client_kwargs.region_name``, path-style addressing, no listing cache."""
    if section is None:
        section = {"kind": "file", "path": "./var/job-archive"}  # cc-backend's default
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: archive: expected an object, got {section!r}")
    kind = section.get("kind")
    if kind not in ARCHIVE_KINDS:
        raise ConfigError(f"{path}: archive.kind: unknown kind {kind!r} ({', '.join(ARCHIVE_KINDS)})")

    def text(key: str, required: bool = True) -> str:
        v = section.get(key, "")
        if not isinstance(v, str) or (required and not v):
            raise ConfigError(f"{path}: archive.{key}: required for kind {kind!r} (a non-empty string), got {v!r}")
        return v

    if kind == "file":
        return kind, str(Path(text("path")).absolute()), {}
    if kind == "sqlite":
        return kind, "sqlite://" + str(Path(text("db-path")).absolute()), {}
    from .backends.s3 import s3_storage_options, sidecar_defaults

    try:
        url, opts = s3_storage_options(section)  # the same mapping as `ccarchive convert` etc.
    except InputError as e:
        raise ConfigError(f"{path}: archive: {e}") from None
    return kind, url, sidecar_defaults(opts)


def _source(path: str, top: dict[str, Any], v: _Values) -> dict[str, Any]:
    """The worker's source spec: ``ccarchive.sources``, else cc-backend's ``metric-store-external``."""
    from .sources.registry import KNOWN

    routes = v["sources"]
    if routes is not None:
        what = v.what("sources")
        if not isinstance(routes, dict) or not routes or not all(isinstance(s, dict) for s in routes.values()):
            raise ConfigError(f"{what}: expected {{\"*\" | \"<cluster>\" | \"<cluster>-<subcluster>\": "
                              f"{{\"kind\": ...}}}}, got {routes!r}")
        spec: dict[str, Any] = dict(routes["*"]) if list(routes) == ["*"] else {"kind": "router", "routes": routes}
    elif top.get("metric-store-external"):
        what = f"{path}: metric-store-external"
        entries = top["metric-store-external"]
        if not isinstance(entries, list):
            raise ConfigError(f"{what}: expected an array of {{scope, url, token}}, got {entries!r}")
        from .sources.router import routes_from_cc_backend

        try:
            spec = routes_from_cc_backend(entries)
        except InputError as e:
            raise ConfigError(f"{path}: {e}") from None
        if list(spec["routes"]) == ["*"]:
            spec = spec["routes"]["*"]
    elif "metric-store" in top:
        raise ConfigError(f"{path}: metric-store: cc-backend's in-process metric store cannot be read by "
                          "another process; set metric-store-external or ccarchive.sources")
    else:
        raise ConfigError(f"{path}: no metric source: set metric-store-external or ccarchive.sources")
    specs: list[Any] = list(spec["routes"].values()) if spec.get("kind") == "router" else [spec]
    kinds = [s.get("kind") for s in specs]
    for kind in kinds:
        if kind not in KNOWN:
            raise ConfigError(f"{what}: unknown metric source kind {kind!r} (known: {', '.join(KNOWN)})")
    from .sources.registry import source_from_spec

    try:
        source_from_spec(spec)  # checks the options now, not in the worker
    except (InputError, TypeError, ValueError) as e:
        raise ConfigError(f"{what}: {e}") from None
    return spec


def _hooks(v: _Values) -> HookSettings:
    h, what = v["hooks"], v.what("hooks")
    if not isinstance(h, dict):
        raise ConfigError(f"{what}: expected an object, got {h!r}")
    unknown = sorted(set(h) - {"callables", "command", "command-timeout", "entry-points"})
    if unknown:
        raise ConfigError(f"{what}.{unknown[0]}: unknown key (callables, command, command-timeout, entry-points)")
    callables = h.get("callables", [])
    if not isinstance(callables, list) or not all(isinstance(c, str) and c for c in callables):
        raise ConfigError(f"{what}.callables: expected a list of \"package.module:function\", got {callables!r}")
    command = h.get("command")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise ConfigError(f"{what}.command: expected a shell command string, got {command!r}")
    entry_points = h.get("entry-points", True)
    if not isinstance(entry_points, bool):
        raise ConfigError(f"{what}.entry-points: expected true or false, got {entry_points!r}")
    timeout = parse_duration(h.get("command-timeout", "60s"), f"{what}.command-timeout")
    return HookSettings(list(callables), command, timeout, entry_points)


def _retry(v: _Values) -> tuple[int, float, float, float]:
    r, what = v["retry"], v.what("retry")
    if not isinstance(r, dict):
        raise ConfigError(f"{what}: expected an object, got {r!r}")
    keys = ("max-attempts", "backoff", "backoff-max", "storage-full-backoff-max")
    unknown = sorted(set(r) - set(keys))
    if unknown:
        raise ConfigError(f"{what}.{unknown[0]}: unknown key ({', '.join(keys)})")
    attempts = r.get("max-attempts", 4)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(f"{what}.max-attempts: expected an integer >= 1, got {attempts!r}")
    return (attempts, parse_duration(r.get("backoff", "2s"), f"{what}.backoff"),
            parse_duration(r.get("backoff-max", "5m"), f"{what}.backoff-max"),
            _at_least_1s(r.get("storage-full-backoff-max", "30s"), f"{what}.storage-full-backoff-max"))


def _at_least_1s(value: Any, what: str) -> float:
    """A pause cap: below 1 s a full disk would be retried in a busy loop."""
    seconds = parse_duration(value, what)
    if seconds < 1:
        raise ConfigError(f"{what}: expected at least 1s, got {value!r}")
    return seconds


def _nats(path: str, top: dict[str, Any], v: _Values) -> NatsSettings | None:
    subject = v["nats-subject"]
    if subject is False:
        return None
    main = top.get("main") or {}
    if subject is None:
        subjects = main.get("api-subjects") or {}
        subject = subjects.get("subject-job-event") if isinstance(subjects, dict) else None
        if not subject:
            return None
    elif not isinstance(subject, str) or not subject:
        raise ConfigError(f"{v.what('nats-subject')}: expected a NATS subject or false, got {subject!r}")
    section = top.get("nats")
    if not isinstance(section, dict) or not isinstance(section.get("address"), str) or not section["address"]:
        raise ConfigError(f"{path}: nats.address: required to subscribe to {subject!r} "
                          "(e.g. \"nats://127.0.0.1:4222\"); set ccarchive.nats-subject to false to disable NATS")
    return NatsSettings(section["address"], subject, section.get("username") or None,
                        section.get("password") or None, section.get("creds-file-path") or None)


def _read(path: str, env: Mapping[str, str] | None,
          overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any], _Values, dict[str, str]]:
    """The file's sections, the merged ``ccarchive`` settings and the environment used."""
    env = dict(os.environ if env is None else env)
    top = load_raw(path)
    return top, _Values(path, top.get("ccarchive"), env, overrides or {}), env


def _main_section(path: str, top: dict[str, Any]) -> dict[str, Any]:
    main = top.get("main") or {}
    if not isinstance(main, dict):
        raise ConfigError(f"{path}: main: expected an object, got {main!r}")
    return main


def _archive_of_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, URL, storage options) for an archive given on the command line instead of the file."""
    kind = "s3" if url.startswith(("s3://", "s3a://")) else "sqlite" if url.startswith("sqlite://") else "file"
    return kind, url, {}


def _archiving_fields(path: str, top: dict[str, Any], v: _Values, env: Mapping[str, str], *,
                      job_db: str | None = None, archive_url: str | None = None,
                      state_db: str | None = None) -> dict[str, Any]:
    """The fields of :class:`ArchivingConfig`; ``job_db``, ``archive_url`` and ``state_db``
    replace the file's values (command-line flags)."""
    main = _main_section(path, top)
    db = job_db or env.get("CCARCHIVE_JOB_DB") or main.get("db") or "./var/job.db"
    if not isinstance(db, str):
        raise ConfigError(f"{path}: main.db: expected a file name, got {db!r}")
    db = str(Path(db).absolute())
    kind, url, storage = _archive_of_url(archive_url) if archive_url else _archive(path, top.get("archive"))
    state = state_db or v["state-db"]
    if state is not None and (not isinstance(state, str) or not state):
        raise ConfigError(f"{v.what('state-db')}: expected a file name, got {state!r}")
    state = str(Path(state).absolute()) if state else str(Path(db).parent / "ccarchive-state.db")
    formats = v["formats"]
    if not isinstance(formats, list) or not formats or not all(f in FORMATS for f in formats):
        raise ConfigError(f"{v.what('formats')}: expected a non-empty list of {', '.join(FORMATS)}, got {formats!r}")
    if "json" not in formats:
        raise ConfigError(f"{v.what('formats')}: must include \"json\": cc-backend reads the job archive "
                          f"(\"parquet\" is an additional dataset for analysis), got {formats!r}")
    gzip_level = v.int("gzip-level")
    if gzip_level > 9:
        raise ConfigError(f"{v.what('gzip-level')}: expected 0..9 (zlib-ng levels; 3 is the measured default), "
                          f"got {gzip_level}")
    attempts, backoff, backoff_max, storage_max = _retry(v)
    return dict(
        path=path, job_db=db, archive_kind=kind, archive_url=url, storage_options=storage,
        source=_source(path, top, v), state_db=state, max_attempts=attempts, retry_backoff_s=backoff,
        retry_backoff_max_s=backoff_max, storage_retry_max_s=storage_max,
        core_scope_max_nodes=v.int("core-scope-max-nodes"),
        resolution=v.int("resolution"), formats=list(formats), parquet_url=_parquet_url(v, "parquet" in formats),
        gzip_level=gzip_level, gzip_threads=None if v["gzip-threads"] is None else v.int("gzip-threads", minimum=1),
    )


def load_archiving_config(path: str, *, env: Mapping[str, str] | None = None,
                          overrides: Mapping[str, Any] | None = None, job_db: str | None = None,
                          archive_url: str | None = None, state_db: str | None = None) -> ArchivingConfig:
    """Job DB, archive, metric source and worker settings of ``path`` (cc-backend's config.json),
    resolved exactly as ``ccarchive serve`` resolves them; the sidecar's own keys are not checked.
    ``job_db``, ``archive_url`` and ``state_db`` replace the file's values."""
    top, v, env = _read(path, env, overrides)
    return ArchivingConfig(**_archiving_fields(path, top, v, env, job_db=job_db, archive_url=archive_url,
                                               state_db=state_db))


def load_config(path: str, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Read and validate ``path`` (cc-backend's config.json) for the sidecar; ``overrides`` maps
    ``ccarchive`` keys (optionally ``"<origin>=<key>"``, e.g. ``"--listen=listen"``) to values."""
    top, v, env = _read(path, env, overrides)
    shared = _archiving_fields(path, top, v, env)
    main = _main_section(path, top)
    host, port = parse_listen(v["listen"], v.what("listen"))
    interval = v["reconcile-interval"]
    interval_s = None if interval is False else v.duration("reconcile-interval")
    env_file = v["env-file"]
    if env_file:
        if not isinstance(env_file, str):
            raise ConfigError(f"{v.what('env-file')}: expected a file name, got {env_file!r}")
        try:
            env = {**read_env_file(env_file), **env}
        except OSError as e:
            raise ConfigError(f"{v.what('env-file')}: cannot read {env_file}: {e.strerror or e}") from None
    disable_auth = main.get("disable-authentication", False) is True
    key = env.get("JWT_PUBLIC_KEY") or None
    if key is None and not disable_auth:
        raise ConfigError("JWT_PUBLIC_KEY is not set (cc-backend's base64 Ed25519 public key; export it or name "
                          "cc-backend's .env in ccarchive.env-file); stop_job tokens cannot be checked without it")
    if key is not None:
        from .service.auth import load_public_key

        load_public_key(key)  # raises ConfigError naming JWT_PUBLIC_KEY
    allowed = main.get("api-allowed-ips") or []
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise ConfigError(f"{path}: main.api-allowed-ips: expected a list of addresses, got {allowed!r}")
    return ServiceConfig(
        **shared, listen_host=host, listen_port=port, grace_period_s=v.duration("grace-period"),
        reconcile_interval_s=interval_s if interval_s else None,
        reconcile_horizon_s=v.duration("reconcile-horizon"), hooks=_hooks(v),
        log_format=v.choice("log-format", ("plain", "json")),
        log_level=v.choice("log-level", LOG_LEVELS), shutdown_timeout_s=v.duration("shutdown-timeout"),
        nats=_nats(path, top, v), jwt_public_key=key, disable_authentication=disable_auth,
        api_allowed_ips=list(allowed),
    )


#: Keys whose values are secrets, compared in lower case with ``_`` read as ``-``: source tokens,
#: S3 keys (cc-backend's and s3fs's names), NATS password and credentials file, the JWT key.
SECRET_KEYS = frozenset({
    "token", "password", "secret", "key", "access-key", "secret-key", "session-token", "aws-access-key-id",
    "aws-secret-access-key", "aws-session-token", "creds-file", "creds-file-path", "jwt-public-key",
    "authorization",
})
MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s/@]*@", re.IGNORECASE)


def mask_url_passwords(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, dataclasses) fit to print: every non-empty value of
    a :data:`SECRET_KEYS` key becomes ``"***"`` and passwords inside URLs are masked."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: MASK if _is_secret_key(k) and v not in (None, "", {}, []) else mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_url_passwords(value)
    return value


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower().replace("_", "-") in SECRET_KEYS
