"""A gzip file read as one stream across all of its members, for tar.gz shards.

A gzip file may hold several members back to back: pigz with --independent, bgzip, `cat a.gz b.gz` and
parallel archivers all write them, and `gzip -d` / `tar tzf` read every member. tarfile's own 'r|gz' stops
at the end of the first member and the rest of the shard looked cut off. `GzipMembers` inflates member
after member (zero padding between members is skipped, as gzip(1) does) and checks each member's CRC-32 and
length trailer. What it refuses, it refuses with an exception that the caller turns into one error member:

- bytes that are not gzip at the start (tarfile.ReadError), or non-gzip bytes after a member;
- a stream cut off inside a member (EOFError): whatever was inflated before the cut is still returned first,
  so a truncated shard gives its readable members, then the error;
- corrupt deflate data or a failed CRC/length check (tarfile.ReadError naming the cause).

The inflater is chosen in INFLATERS; `bench.decode` measures each on tar.gz shards of real NIH PNGs
(docs/BENCHMARKS.md, "tar.gz inflate"). zlib-ng is the default: 1.6x stdlib zlib's inflate per image in an
exploratory run here (ISA-L 1.4x), over the 1.5x bar issue 16 set. Where zlib-ng does not import, stdlib
zlib reads the same shards with the same results (tests/unit/test_archives.py runs every cut with both).
"""

from __future__ import annotations

import importlib
import io
import tarfile
import zlib
from types import ModuleType
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
READ_BYTES = 64 * 1024  # compressed bytes per read from the shard
MAX_BLOCK = 4 * 1024 * 1024  # inflated bytes per step at most (a gzip bomb inflates 1000x)
# name -> module with a zlib-compatible decompressobj(wbits) and error; imported on first use.
INFLATERS = {"zlib": "zlib", "zlib-ng": "zlib_ng.zlib_ng", "isal": "isal.isal_zlib"}
DEFAULT_INFLATER = "zlib-ng"


def inflater_module(name: str | None = None) -> ModuleType:
    """The module behind an INFLATERS name (ImportError when that package is missing); by default
    DEFAULT_INFLATER, or stdlib zlib where it does not import."""
    if name is None:
        try:
            return inflater_module(DEFAULT_INFLATER)
        except ImportError:
            return zlib
    if name not in INFLATERS:
        raise ValueError(f"unknown gzip inflater {name!r}; expected one of {sorted(INFLATERS)}")
    return importlib.import_module(INFLATERS[name])


class GzipMembers(io.RawIOBase):
    """Readable stream of the inflated bytes of every member of the gzip data read from `raw`."""

    def __init__(self, raw: Any, inflater: ModuleType = zlib) -> None:
        super().__init__()
        self._raw = raw
        self._zlib = inflater
        self._inflate: Any = None  # the current member's decompressobj, None between members
        self._pending = b""  # compressed bytes read from raw and not yet given to an inflater
        self.members = 0  # members started so far
        self._out = b""  # inflated bytes not yet returned, from _pos on
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Read more compressed bytes into _pending; False at the end of raw."""
        more = self._raw.read(READ_BYTES)
        if not more:
            return False
        self._pending += more
        return True

    def _start_member(self) -> bool:
        """Position at the next member's header and start inflating it; False at a clean end of the data."""
        while True:
            if self.members:
                self._pending = self._pending.lstrip(b"\0")  # padding after a member, as gzip(1) allows
            if len(self._pending) >= len(GZIP_MAGIC):
                break
            if not self._fill():
                if not self._pending:
                    if self.members == 0:
                        raise tarfile.ReadError("empty file (no gzip data)")
                    return False
                break
        if not self._pending.startswith(GZIP_MAGIC):
            raise tarfile.ReadError("not a gzip file" if self.members == 0
                                    else f"bytes after gzip member {self.members} are not gzip data")
        self._inflate = self._zlib.decompressobj(wbits=31)  # 31: gzip wrapper, CRC-32 and length checked
        self.members += 1
        return True

    def _inflate_more(self) -> bytes:
        """The next non-empty block of inflated bytes, or b"" at a clean end of the data."""
        while True:
            if self._inflate is None and not self._start_member():
                return b""
            if not self._pending and not self._fill():
                raise EOFError(f"gzip data ends inside member {self.members} (cut off)")
            try:
                out = self._inflate.decompress(self._pending, MAX_BLOCK)
            except self._zlib.error as exc:
                raise tarfile.ReadError(f"corrupt gzip data in member {self.members} ({exc})") from None
            if self._inflate.eof:
                self._pending = self._inflate.unused_data + self._inflate.unconsumed_tail
                self._inflate = None
            else:
                self._pending = self._inflate.unconsumed_tail
            if out:
                return out

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` inflated bytes (b"" at the end); raises as the module docstring says."""
        while self._pos >= len(self._out):
            self._out, self._pos = self._inflate_more(), 0
            if not self._out:
                return b""
        end = len(self._out) if size is None or size < 0 else self._pos + size
        chunk = self._out[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
