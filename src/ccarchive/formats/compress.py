"""gzip for data.json: the archive's size rule and a fast gzip built on ISA-L (``isal``).

zlib level 6 compresses JSON text at 15-19 MB/s on the development machine, far slower than
encoding it; ISA-L's igzip runs at 400-550 MB/s per core (measured in ``bench/encode.py``) and its
threaded writer can use both cores.  The price is size: ISA-L's best level (3) is about 9 % larger
than zlib 6 on noisy samples and about 18 % larger on smooth real data (the emmy fixture).  Levels
4-9 therefore select the standard zlib deflater (level 4: ~11 % larger than zlib 6 on emmy, at
~90 MB/s) for archives that value size over speed.

The output is always one standard gzip member with ``mtime`` 0 (identical input, identical
bytes), readable by Python's ``gzip`` and Go's ``compress/gzip``.
"""

from __future__ import annotations

import gzip
import io
from typing import IO, cast

from isal import igzip, igzip_threaded

#: cc-backend's filesystem backend gzips data.json when the encoded text incl. "\n" exceeds this.
GZIP_THRESHOLD = 2000
#: Levels 0-3 are ISA-L's (3 compresses best at about the speed of 1 and 2); 4-9 are zlib's.
DEFAULT_LEVEL = 3
MAX_ISAL_LEVEL = 3
GZIP_MAGIC = b"\x1f\x8b"


def should_gzip(encoded_len: int) -> bool:
    """True when data.json of this many bytes (incl. its trailing newline) is stored gzipped."""
    return encoded_len > GZIP_THRESHOLD


def is_gzip(head: bytes) -> bool:
    """True when ``head`` starts with the gzip magic bytes."""
    return head[:2] == GZIP_MAGIC


def _check_level(level: int) -> None:
    if not 0 <= level <= 9:
        raise ValueError(f"gzip level must be 0..9 (0-3 ISA-L, 4-9 zlib), got {level}")


def gzip_bytes(data: bytes | bytearray | memoryview, level: int = DEFAULT_LEVEL, threads: int = 1) -> bytes:
    """Compress ``data`` into one standard gzip member (``threads > 1``: parallel ISA-L blocks)."""
    _check_level(level)
    if level > MAX_ISAL_LEVEL:
        return gzip.compress(data, compresslevel=level, mtime=0)
    if threads != 1 and len(data) > (2 << 20):
        out = io.BytesIO()
        with open_gzip_writer(out, level, threads) as w:
            w.write(data)
        return out.getvalue()
    return igzip.compress(data, compresslevel=level, mtime=0)


def gunzip_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Decompress gzip ``data`` (all members)."""
    return igzip.decompress(data)


def open_gzip_writer(fileobj: IO[bytes], level: int = DEFAULT_LEVEL, threads: int = 1) -> IO[bytes]:
    """A binary writer that gzips into ``fileobj`` (left open on close).

    ``threads > 1`` compresses 1 MiB blocks in parallel threads (pigz-style, still one gzip
    member; ISA-L levels only); ``threads < 0`` uses every available core."""
    _check_level(level)
    if level > MAX_ISAL_LEVEL:
        return cast(IO[bytes], gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0))
    if threads in (0, 1):
        return cast(IO[bytes], igzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0))
    return cast(IO[bytes], igzip_threaded.open(fileobj, "wb", compresslevel=level, threads=threads))


def open_gzip_reader(fileobj: IO[bytes]) -> IO[bytes]:
    """A binary reader that decompresses gzip from ``fileobj``."""
    return cast(IO[bytes], igzip.GzipFile(fileobj=fileobj, mode="rb"))
