"""S3 in the v3 key layout, configured the way cc-backend is, and the ``archive`` config section.

The v3 tree on S3 needs no code of its own: :class:`~ccarchive.backends.tree.JobArchive` writes through
s3fs with one PUT per object (atomic on S3), data object first, meta.json last, the stale
opposite data object deleted, ``version.txt`` bootstrapped into an empty (or missing) bucket.
What this module adds:

* cc-backend's kebab-case ``archive`` keys (``endpoint``, ``access-key``, ``secret-key``,
  ``bucket``, ``region``, ``use-path-style`` — the camelCase names in cc-backend's
  doc comment are wrong) mapped to s3fs storage options, and :func:`archive_from_config` for
  every ``kind`` (file | s3 | sqlite);
* :class:`S3Archive`, which turns "endpoint unreachable / connection broke / 5xx" failures into
  :class:`~ccarchive.errors.TransientError` (chained to the original), so the worker's retry
  logic sees a ccarchive error with reason ``transient`` instead of a bare botocore exception;
* defaults that matter for a long-running sidecar sharing a bucket with other writers: s3fs's
  listing cache is off, so a job written by another process is visible on the next call.

Without keys in the config, s3fs uses the standard AWS chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``,
profiles, instance roles).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError, TransientError
from . import is_transient_backend_error
from .tree import JobArchive

F = TypeVar("F", bound=Callable[..., Any])

#: kebab-case keys of cc-backend's S3ArchiveConfig (s3Backend.go:37-44)
S3_KEYS = ("kind", "endpoint", "access-key", "secret-key", "bucket", "region", "use-path-style")
#: keys every kind may carry (compression, retention) that ccarchive reads past
COMMON_KEYS = ("compression", "retention")
DEFAULT_REGION = "us-east-1"


def _bool(v: Any, key: str) -> bool:
    if isinstance(v, bool):
        return v
    raise InputError(f"archive config: {key!r} must be true or false, got {v!r}")


def _str(section: dict[str, Any], key: str) -> str:
    v = section.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InputError(f"archive config: {key!r} must be a string, got {v!r}")
    return v


def s3_storage_options(section: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(url, s3fs storage options)`` for cc-backend's ``{"kind": "s3", ...}`` section.

    ``bucket`` is required (a ``bucket/prefix`` value puts the archive under a prefix); without
    ``access-key``/``secret-key`` the AWS default credential chain applies.
    """
    unknown = sorted(set(section) - set(S3_KEYS) - set(COMMON_KEYS))
    if unknown:
        camel = {"accessKey": "access-key", "secretKey": "secret-key", "usePathStyle": "use-path-style"}
        hint = "; ".join(f"{k!r} is spelled {camel[k]!r}" for k in unknown if k in camel)
        raise InputError(f"archive config (kind s3): unknown keys {unknown}" + (f" ({hint})" if hint else ""))
    bucket = _str(section, "bucket").strip("/")
    if not bucket:
        raise InputError("archive config (kind s3): 'bucket' is required")
    opts: dict[str, Any] = {}
    endpoint = _str(section, "endpoint")
    if endpoint:
        opts["endpoint_url"] = endpoint
    key, secret = _str(section, "access-key"), _str(section, "secret-key")
    if bool(key) != bool(secret):
        raise InputError("archive config (kind s3): give both 'access-key' and 'secret-key', or neither")
    if key:
        opts["key"], opts["secret"] = key, secret
    opts["client_kwargs"] = {"region_name": _str(section, "region") or DEFAULT_REGION}
    if _bool(section.get("use-path-style", False), "use-path-style"):
        opts["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return f"s3://{bucket}", opts


def sidecar_defaults(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """s3fs options with the listing cache off unless the caller chose otherwise."""
    opts = dict(storage_options or {})
    opts.setdefault("use_listings_cache", False)
    return opts


def archive_from_config(section: dict[str, Any], *, create: bool = False,
                        base_dir: str | Path | None = None) -> Any:
    """Open the archive that cc-backend's ``archive`` section describes (kind file, s3 or sqlite).

    Relative ``path`` / ``db-path`` values are resolved against ``base_dir`` when given, else the
    current directory (cc-backend resolves them against its working directory, usually the one
    holding its config.json).
    """
    if not isinstance(section, dict):
        raise InputError("archive config: the 'archive' section must be an object")
    kind = section.get("kind", "file")

    def resolve(p: str) -> str:
        return str(Path(base_dir) / p) if base_dir is not None and not Path(p).is_absolute() else p

    if kind == "file":
        path = _str(section, "path")
        if not path:
            raise InputError("archive config (kind file): 'path' is required")
        return JobArchive(resolve(path), create=create)
    if kind == "s3":
        url, opts = s3_storage_options(section)
        return S3Archive(url, create=create, storage_options=opts)
    if kind == "sqlite":
        from .sqlite import SqliteArchive

        db = _str(section, "db-path")
        if not db:
            hint = " (cc-backend reads 'db-path', not 'dbPath')" if "dbPath" in section else ""
            raise InputError(f"archive config (kind sqlite): 'db-path' is required{hint}")
        return SqliteArchive(resolve(db), create=create)
    raise InputError(f"archive config: unknown kind {kind!r} (file, s3 or sqlite)")


def load_archive_section(config_file: str | Path) -> dict[str, Any]:
    """The ``archive`` section of a cc-backend config.json (``archive-file`` indirection included)."""
    p = Path(config_file)
    try:
        doc = json.loads(p.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except ValueError as e:
        raise InputError(f"{p}: malformed JSON: {e}") from None
    if "archive" not in doc and "archive-file" in doc:
        return load_archive_section_file(p.parent / doc["archive-file"])
    section = doc.get("archive", {"kind": "file", "path": "./var/job-archive"})
    if not isinstance(section, dict):
        raise InputError(f"{p}: 'archive' must be an object")
    return section


def load_archive_section_file(path: Path) -> dict[str, Any]:
    try:
        section = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the archive section: {e}") from None
    if not isinstance(section, dict):
        raise InputError(f"{path}: the archive section must be an object")
    return section


# -- error translation ----------------------------------------------------------------------------

def _transient(url: str, exc: BaseException) -> TransientError:
    return TransientError(f"{url}: S3 storage unavailable ({type(exc).__name__}: {exc}); will retry")


@contextlib.contextmanager
def _translated(url: str) -> Iterator[None]:
    """Re-raise an unreachable-endpoint failure as :class:`TransientError` (cause kept)."""
    try:
        yield
    except TransientError:
        raise
    except Exception as e:
        if is_transient_backend_error(e):
            raise _transient(url, e) from e
        raise


def _translating(fn: F) -> F:
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(self: S3Archive, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with _translated(self.url):
                yield from fn(self, *args, **kwargs)
        return gen  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(self: S3Archive, *args: Any, **kwargs: Any) -> Any:
        with _translated(self.url):
            return fn(self, *args, **kwargs)
    return call  # type: ignore[return-value]


class S3Archive(JobArchive):
    """:class:`~ccarchive.backends.tree.JobArchive` on S3 whose unreachable-endpoint failures raise
    :class:`~ccarchive.errors.TransientError` (the original exception is its ``__cause__``)."""

    def __init__(self, url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None):
        with _translated(url):
            super().__init__(url, create=create, storage_options=sidecar_defaults(storage_options))


_PUBLIC = ("clusters", "has_cluster", "load_cluster", "load_cluster_bytes", "store_cluster", "exists",
           "write_job", "write_encoded", "write_stream", "load_meta", "load_meta_bytes", "load_data_bytes",
           "load_data_text", "load_data",
           "iter_job_keys", "iter_jobs", "list_entries", "delete_job", "temporary_files")
for _name in _PUBLIC:
    _fn = getattr(JobArchive, _name, None)
    if _fn is not None:
        setattr(S3Archive, _name, _translating(_fn))
del _name, _fn
