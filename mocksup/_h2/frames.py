"""HTTP/2 frame constants and the few frames the server writes (RFC 9113 §6)."""

from __future__ import annotations

import struct

__all__ = (
    "CONNECTION_WINDOW",
    "DEFAULT_WINDOW",
    "MAX_FRAME",
    "MAX_WINDOW",
    "PREFACE",
    "STREAM_WINDOW",
    "ErrorCode",
    "Flag",
    "FrameType",
    "frame",
    "goaway",
    "headers_frames",
    "rst_stream",
    "settings",
    "window_update",
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEAD = struct.Struct(">HBBBL")  # a 24-bit length split 16+8, type, flags, stream id
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
DEFAULT_FRAME = 16_384
#: The largest frame the server receives (advertised): big exports arrive in few frames.
MAX_FRAME = 1 << 20
#: The window each stream starts with (advertised) and the connection's (one update).
STREAM_WINDOW = 8 << 20
CONNECTION_WINDOW = 32 << 20


class FrameType:
    DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
    PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9


class Flag:
    END_STREAM = ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class ErrorCode:
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
    SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 4, 5, 6, 7
    CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 8, 9, 10, 11


class Setting:
    HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
    INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    size = len(payload)
    return HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream) + payload


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame with ``values``."""
    payload = b"".join(struct.pack(">HL", key, value) for key, value in values.items())
    return frame(FrameType.SETTINGS, 0, 0, payload)


def window_update(stream: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(FrameType.WINDOW_UPDATE, 0, stream, struct.pack(">L", increment))


def rst_stream(stream: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(FrameType.RST_STREAM, 0, stream, struct.pack(">L", code))


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return frame(FrameType.GOAWAY, 0, 0, struct.pack(">LL", last_stream, code) + debug)


def headers_frames(stream: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """``block`` as a HEADERS frame and as many CONTINUATION frames as ``max_frame`` needs."""
    flags = Flag.END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(FrameType.HEADERS, flags | Flag.END_HEADERS, stream, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(FrameType.HEADERS, flags, stream, parts[0])]
    for part in parts[1:-1]:
        out.append(frame(FrameType.CONTINUATION, 0, stream, part))
    out.append(frame(FrameType.CONTINUATION, Flag.END_HEADERS, stream, parts[-1]))
    return b"".join(out)
