"""gzip for data.json: the archive's size rule and a fast, parallel, deterministic gzip writer.

Why zlib-ng level 3: the budget is a compressor much faster than zlib level 6 (12-19 MB/s of JSON
text here) whose output is at most 15 % larger.  Measured on data.json text (``bench/encode.py``;
emmy = cc-backend's real test job re-encoded, synthetic = noisy bench samples), size vs zlib 6:

==================  ==========  =========  ==================
compressor          emmy size   synthetic  MB/s (1 core)
==================  ==========  =========  ==================
ISA-L igzip L1-L3   1.18-1.21   1.09-1.11  250-600
zlib-ng L2          1.18        1.10       135-195
zlib-ng L3          1.10        1.05       100-145  <- default
zlib-ng L4          1.05        1.04       80-100
zlib L4             1.11        1.05       55-70
==================  ==========  =========  ==================

ISA-L is fastest but misses the 15 % rule on smooth real data, so the default is zlib-ng level 3;
``level`` 0-9 is zlib-ng's (same meaning as zlib's).  The process-wide level and thread count
come from :func:`configure` (the service's ``gzip-level`` / ``gzip-threads``) or the environment
(``CCARCHIVE_GZIP_LEVEL``, ``CCARCHIVE_GZIP_THREADS``).

Why blocks: the text is cut into fixed 512 KiB blocks, each deflated independently (primed with the
previous block's last 32 KiB as dictionary, ended by a sync flush), pigz-style.  So the blocks can
be compressed on other threads (zlib-ng releases the GIL) while the caller formats the next block,
the size cost is ~0.3 %, and -- since the cut points depend only on the byte offsets -- the output
is identical whether the text arrives whole or in pieces, and for any thread count.  The result
is one standard gzip member with ``mtime`` 0, readable by Python's ``gzip`` and Go's
``compress/gzip``.

Reading: :func:`gunzip_array` inflates (zlib-ng) straight into one numpy array sized from the
gzip trailer, which the data.json number kernel then parses in place -- the fastest way here
(~800 MB/s of text) and the text is in memory once.  :func:`gunzip_bytes` serves callers that
need ``bytes``.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt
from isal import igzip
from zlib_ng import zlib_ng

from ..errors import InputError

#: cc-backend's filesystem backend gzips data.json when the encoded text incl. "\n" exceeds this.
GZIP_THRESHOLD = 2000
#: zlib-ng level 3: ~1.10x zlib 6 on real data at 7-10x its speed (table above).
DEFAULT_LEVEL = 3
#: Bytes per independently deflated block.
BLOCK_BYTES = 1 << 19
#: Compression threads by default: every core up to two (the caller's thread keeps encoding
#: meanwhile; 1 = no overlap, compress in the caller).
DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))
GZIP_MAGIC = b"\x1f\x8b"
#: magic, deflate, no flags, mtime 0, no extra flags, OS 255 (unknown: same bytes on every OS)
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: an empty final stored-less block: ends the deflate stream after the sync-flushed blocks
_FINAL_BLOCK = b"\x03\x00"
_WINDOW = 32768

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def should_gzip(encoded_len: int) -> bool:
    """True when data.json of this many bytes (incl. its trailing newline) is stored gzipped."""
    return encoded_len > GZIP_THRESHOLD


def is_gzip(head: bytes) -> bool:
    """True when ``head`` starts with the gzip magic bytes."""
    return head[:2] == GZIP_MAGIC


def _check_level(level: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"gzip level must be 0..9 (zlib-ng levels), got {level!r}")


class GzipSettings:
    """The level and thread count used where a call does not name them."""

    def __init__(self) -> None:
        self.level, self.threads = DEFAULT_LEVEL, DEFAULT_THREADS
        for name, key in (("CCARCHIVE_GZIP_LEVEL", "level"), ("CCARCHIVE_GZIP_THREADS", "threads")):
            raw = os.environ.get(name)
            if raw:
                try:
                    configure(self, **{key: int(raw)})
                except ValueError as e:
                    raise InputError(f"environment {name}={raw!r}: {e}") from None


def configure(settings: GzipSettings | None = None, level: int | None = None, threads: int | None = None) -> None:
    """Set the process-wide gzip ``level`` (0-9) and ``threads`` (>= 1); None keeps the current."""
    target = settings if settings is not None else SETTINGS
    if level is not None:
        _check_level(level)
        target.level = level
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"gzip threads must be a positive integer, got {threads!r}")
        target.threads = threads


SETTINGS = GzipSettings()


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    """One process-wide pool: small jobs must not pay for thread start-up on every file."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:  # grow only; an older pool finishes its work
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ccarchive-gzip")
            _pool_size = threads
        return _pool


def _deflate_block(block: bytes, zdict: bytes, level: int) -> tuple[bytes, int]:
    """One raw-deflate block ending on a byte boundary (sync flush), and its CRC-32."""
    if zdict:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, 8, zlib_ng.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, 8, zlib_ng.Z_DEFAULT_STRATEGY)
    return c.compress(block) + c.flush(zlib_ng.Z_SYNC_FLUSH), zlib_ng.crc32(block)


class GzipBlockWriter:
    """Write-only binary stream: gzips what is written into ``fileobj`` (left open).

    ``threads > 1`` deflates blocks on a shared thread pool, at most ``threads + 1`` blocks in
    flight, so memory stays bounded at a few MiB however large the text.  ``close()`` writes the
    trailer; ``abort()`` stops without it (the caller then discards the destination)."""

    def __init__(self, fileobj: IO[bytes], level: int | None = None, threads: int | None = None) -> None:
        level = SETTINGS.level if level is None else level
        threads = SETTINGS.threads if threads is None else threads
        _check_level(level)
        self.fileobj, self.level = fileobj, level
        self.threads = (os.cpu_count() or 1) if threads < 0 else max(1, threads)
        self._buf = bytearray()
        self._prev_tail = b""
        self._inflight: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._crc = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: seconds spent in ``fileobj.write`` (the destination's share of the time)
        self.write_seconds = 0.0
        self.closed = False
        self._emit(_HEADER)

    # -- internals --------------------------------------------------------------------------
    def _emit(self, payload: bytes) -> None:
        t0 = time.perf_counter()
        self.fileobj.write(payload)
        self.write_seconds += time.perf_counter() - t0
        self.bytes_out += len(payload)

    def _collect(self, keep: int) -> None:
        """Write finished blocks, in order, until at most ``keep`` are in flight."""
        while len(self._inflight) > keep:
            fut, n = self._inflight.popleft()
            out, crc = fut.result()
            self._crc = zlib_ng.crc32_combine(self._crc, crc, n)
            self._emit(out)

    def _submit(self, block: bytes) -> None:
        zdict, self._prev_tail = self._prev_tail, block[-_WINDOW:]
        if self.threads == 1:
            out, crc = _deflate_block(block, zdict, self.level)
            self._crc = zlib_ng.crc32_combine(self._crc, crc, len(block))
            self._emit(out)
            return
        fut = _shared_pool(self.threads).submit(_deflate_block, block, zdict, self.level)
        self._inflight.append((fut, len(block)))
        self._collect(self.threads)

    # -- stream API ---------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed GzipBlockWriter")
        n = len(data)
        self.bytes_in += n
        self._buf += data
        if len(self._buf) >= BLOCK_BYTES:
            view = memoryview(self._buf)
            full = len(self._buf) - len(self._buf) % BLOCK_BYTES
            for start in range(0, full, BLOCK_BYTES):
                self._submit(bytes(view[start : start + BLOCK_BYTES]))
            view.release()
            del self._buf[:full]
        return n

    def close(self) -> None:
        """Compress the rest, write the final block and the trailer (CRC-32, size mod 2**32)."""
        if self.closed:
            return
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        self._collect(0)
        self._emit(_FINAL_BLOCK + struct.pack("<II", self._crc, self.bytes_in & 0xFFFFFFFF))
        self.closed = True

    def abort(self) -> None:
        """Stop without finishing the stream: wait for running blocks, drop everything."""
        for fut, _ in self._inflight:
            fut.cancel()
            try:
                fut.result()
            except BaseException:  # noqa: BLE001, S110 - aborting anyway
                pass
        self._inflight.clear()
        self._buf.clear()
        self.closed = True

    def __enter__(self) -> GzipBlockWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def gzip_bytes(data: bytes | bytearray | memoryview, level: int | None = None, threads: int = 1) -> bytes:
    """Compress ``data`` into one standard gzip member, the same bytes :class:`GzipBlockWriter`
    produces for the same text (any thread count)."""
    out = io.BytesIO()
    with GzipBlockWriter(out, level, threads if len(data) > BLOCK_BYTES else 1) as w:
        w.write(data)
    return out.getvalue()


def gzip_later(data: bytes, level: int | None = None) -> Future[bytes]:
    """:func:`gzip_bytes` of ``data`` (one thread, the same bytes) started on the shared
    compression pool: the caller goes on while it runs, since zlib-ng releases the GIL."""
    return _shared_pool(1).submit(gzip_bytes, data, level)


def gunzip_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Decompress gzip ``data`` (all members) into ``bytes``; ISA-L inflates fastest into a bytes
    object (~650 MB/s of text here, zlib-ng ~570).  :func:`gunzip_array` is faster still."""
    return igzip.decompress(data)


#: Compressed bytes read at a time when decompressing from a file.
READ_BUFFER = 1 << 20
#: zlib-ng's error for corrupt data (its type stub does not declare it an exception class)
_ZLIB_ERROR = cast(type[Exception], zlib_ng.error)


def gzip_size_hint(tail: bytes | bytearray | memoryview) -> int:
    """The uncompressed size a gzip stream ending in ``tail`` announces (its last member's ISIZE,
    the size modulo 2**32; exact for the one-member files written here)."""
    return struct.unpack("<I", bytes(tail[-4:]))[0] if len(tail) >= 4 else 0


def gunzip_array(
    src: bytes | bytearray | memoryview | IO[bytes], size_hint: int | None = None
) -> npt.NDArray[np.uint8]:
    """Decompress every gzip member of ``src`` (bytes-like, or a binary file read in 1 MiB pieces)
    straight into one uint8 array.

    Why: zlib-ng's reader inflates into the array itself -- no growing ``bytes``, no copy --
    which is ~800 MB/s of text here against ~650 for the fastest ``bytes`` result, and memory is
    the text once.  The array is sized from the trailer (``size_hint`` for a file: see
    :func:`gzip_size_hint`) and grows only for streams that announce too little.  Broken data
    raises ``EOFError`` (truncated) or ``OSError`` (corrupt), as Python's ``gzip`` does."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        reader = zlib_ng._GzipReader(cast(Any, src))  # reads bytes-like objects in place
        if size_hint is None:
            size_hint = gzip_size_hint(src)
    else:
        reader = zlib_ng._GzipReader(cast(Any, src), READ_BUFFER)
    out = np.empty((size_hint or READ_BUFFER) + 1, dtype=np.uint8)  # + 1: the end shows as a short read
    n = 0
    try:
        while True:
            got = reader.readinto(out.data[n:])
            if not got:
                break
            n += got
            if n == out.shape[0]:
                bigger = np.empty(2 * out.shape[0], dtype=np.uint8)
                bigger[:n] = out[:n]
                out = bigger
    except _ZLIB_ERROR as e:
        raise OSError(f"corrupt gzip data: {e}") from None
    return out[:n]


def open_gzip_writer(fileobj: IO[bytes], level: int | None = None, threads: int = 1) -> IO[bytes]:
    """A binary writer that gzips into ``fileobj`` (left open on close); ``threads > 1`` deflates
    blocks in parallel (still one gzip member), ``threads < 0`` uses every core."""
    return cast(IO[bytes], GzipBlockWriter(fileobj, level, threads))


def open_gzip_reader(fileobj: IO[bytes]) -> IO[bytes]:
    """A binary reader that decompresses gzip from ``fileobj``."""
    return cast(IO[bytes], igzip.GzipFile(fileobj=fileobj, mode="rb"))
