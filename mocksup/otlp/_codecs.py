"""Content-Encoding decoders for OTLP/HTTP bodies, each bounded by the body limit.

The set is the OpenTelemetry Collector's (``confighttp``'s default ``compression_algorithms``):
``gzip``, ``zstd``, ``zlib``, ``deflate`` (zlib-wrapped, as HTTP defines it), ``snappy`` (the
block format, or the framed one when the body starts with its stream header), ``x-snappy-framed``
and ``lz4`` (the frame format). gzip and zlib come with Python; the others need the optional
``cramjam`` package (``pip install 'mocksup[codecs]'``).

No decoder ever produces more than ``limit + 1`` bytes, so a small compressed body cannot
inflate into a large allocation. A gzip body may hold several members (RFC 1952), all kept;
anything after the last member is refused, as Go's multistream reader refuses it.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ("ENCODINGS", "EXTRA_ENCODINGS", "CodecError", "decode", "have_codecs")

#: Every ``Content-Encoding`` accepted; ``""`` is no encoding.
ENCODINGS = frozenset({"", "gzip", "zstd", "zlib", "deflate", "snappy", "x-snappy-framed", "lz4"})
#: The encodings that need the optional ``cramjam`` package.
EXTRA_ENCODINGS = frozenset({"zstd", "snappy", "x-snappy-framed", "lz4"})

_SNAPPY_STREAM = b"\xff\x06\x00\x00sNaPpY"
# cramjam says "the output buffer is too small" in these words (one per codec family).
_OVERFLOW = ("failed to write whole buffer", "smaller than required", "large enough")

_cramjam: Any
try:
    _cramjam = importlib.import_module("cramjam")
except ImportError:  # the optional extra is not installed
    _cramjam = None


class CodecError(Exception):
    """A body that cannot be decoded.

    ``kind`` is ``"unsupported"`` (an unknown encoding), ``"missing"`` (its codec is not
    installed), ``"broken"`` (not valid in that encoding) or ``"too_large"`` (it inflates
    past the limit).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def have_codecs() -> bool:
    """Whether the optional codecs (zstd, snappy, lz4) are installed."""
    return _cramjam is not None


def decode(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded from ``encoding`` (a name of :data:`ENCODINGS`), at most ``limit`` bytes.

    :raises CodecError: see its ``kind``.
    """
    if encoding == "":
        return data
    if encoding == "gzip":
        return _gunzip(data, limit)
    if encoding in ("zlib", "deflate"):
        return _unzlib(data, limit, encoding)
    if encoding not in ENCODINGS:
        raise CodecError("unsupported", f"unsupported Content-Encoding: {encoding}")
    if _cramjam is None:
        raise CodecError(
            "missing",
            f"Content-Encoding {encoding} needs mocksup's optional codecs: "
            "pip install 'mocksup[codecs]'",
        )
    if encoding == "zstd":
        return _bounded(_cramjam.zstd.decompress_into, data, limit, encoding)
    if encoding == "lz4":
        return _bounded(_cramjam.lz4.decompress_into, data, limit, encoding)
    if encoding == "x-snappy-framed" or data.startswith(_SNAPPY_STREAM):
        return _bounded(_cramjam.snappy.decompress_into, data, limit, encoding)
    return _snappy_block(data, limit)


def _gunzip(data: bytes, limit: int) -> bytes:
    if not data:
        raise CodecError("broken", "gzip: EOF")
    parts: list[bytes] = []
    total = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - total)
        except zlib.error as error:
            # After a first member, this is whatever follows it: Go says "invalid header".
            raise CodecError("broken", f"gzip: {_zlib_reason(error, bool(parts))}") from None
        total += len(part)
        if total > limit or inflater.unconsumed_tail:
            raise CodecError("too_large", f"the decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise CodecError("broken", "gzip: unexpected EOF")
        parts.append(part)
        rest = inflater.unused_data
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _zlib_reason(error: zlib.error, after_member: bool) -> str:
    if after_member:
        return "invalid header (data after the last gzip member)"
    return str(error).removeprefix("Error -3 while decompressing data: ")


def _unzlib(data: bytes, limit: int, encoding: str) -> bytes:
    # Go's zlib reader: a zlib header is required (raw deflate is refused), the checksum is
    # verified, and whatever follows the stream is never read.
    inflater = zlib.decompressobj(zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise CodecError("broken", f"zlib: {_zlib_reason(error, False)}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise CodecError("too_large", f"the decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise CodecError("broken", f"{encoding}: unexpected EOF")
    return out


def _snappy_block(data: bytes, limit: int) -> bytes:
    assert _cramjam is not None
    try:
        size = int(_cramjam.snappy.decompress_raw_len(data))
    except Exception as error:  # cramjam raises its own DecompressionError
        raise CodecError("broken", f"snappy: {error}") from None
    if size > limit:
        # The block format states its length up front: refused before any allocation.
        raise CodecError("too_large", "snappy: decoded size exceeds max request body size")
    return _bounded(_cramjam.snappy.decompress_raw_into, data, limit, "snappy", size)


def _bounded(
    into: Callable[[Any, Any], int], data: bytes, limit: int, name: str, size: int = 0
) -> bytes:
    """Decode into a buffer that grows (4x a step) up to ``limit + 1`` bytes, never past."""
    capacity = min(limit + 1, max(size + 1, 64 * 1024, 4 * len(data)))
    while True:
        out = bytearray(capacity)
        try:
            count = into(data, out)
        except Exception as error:  # cramjam.DecompressionError
            if not any(words in str(error) for words in _OVERFLOW):
                raise CodecError("broken", f"{name}: {error}") from None
            if capacity > limit:
                raise CodecError(
                    "too_large", f"the decompressed body exceeds {limit} bytes"
                ) from None
            capacity = min(limit + 1, capacity * 4)
            continue
        if count > limit:
            raise CodecError("too_large", f"the decompressed body exceeds {limit} bytes")
        del out[count:]
        return bytes(out)
