"""One HTTP/2 connection (RFC 9113), server side, driven by the server's event loop.

:meth:`Connection.feed` parses what arrived (frames, HPACK, flow control) and queues what to
send in ``out``; the server's loop writes it (one send per batch of frames read). Requests go
to a :class:`Handler` a stream at a time: ``opened`` once the headers are in (it may answer at
once, e.g. an unknown method), ``received`` after each DATA frame (it may refuse a message too
large), ``ended`` when the request is complete; each returns an :class:`Answer` or ``None``
(no answer yet: :meth:`Connection.answer` sends it later, from the loop).

Errors follow RFC 9113 §5.4: a stream error resets that stream (RST_STREAM), a connection
error sends GOAWAY with the last stream id and closes.
"""

from __future__ import annotations

import struct
import time

from mocksup._h2.fields import well_formed
from mocksup._h2.frames import (
    CONNECTION_WINDOW,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    HEAD,
    MAX_FRAME,
    MAX_WINDOW,
    PREFACE,
    STREAM_WINDOW,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    frame,
    goaway,
    headers_frames,
    rst_stream,
    settings,
    window_update,
)
from mocksup._h2.hpack import TABLE_SIZE, HeaderDecoder, HeaderListTooLarge, HPACKError
from mocksup._h2.stream import Answer, H2Error, Handler, Held, Limits, Stream

__all__ = ("Answer", "Connection", "H2Error", "Handler", "Stream")

_U32 = struct.Struct(">L")


class Connection:
    """The protocol state of one connection; the server owns the socket.

    :param held: what the streams of all the server's connections hold (``limits.max_held``).
    """

    def __init__(self, handler: Handler, limits: Limits, held: Held | None = None) -> None:
        self.handler = handler
        self.limits = limits
        self.out = bytearray()
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.closed = False  # no more frames are read; close once ``out`` is sent
        self.goaway_sent = False
        self.since = time.monotonic()  # of the last frame received
        self._buf = bytearray()
        self._preface = False
        self._decoder = HeaderDecoder(limits.max_header_list)
        self._send_window = DEFAULT_WINDOW
        self._recv_window = CONNECTION_WINDOW
        self._peer_window = DEFAULT_WINDOW
        self._peer_frame = DEFAULT_FRAME
        self._continued: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self._data_stream: Stream | None = None  # the DATA frame being read, and its rest
        self._data_left = 0
        self._data_end = False
        self._blocked: list[Stream] = []
        self._held = held or Held()
        self.out += settings(
            {
                Setting.MAX_CONCURRENT_STREAMS: limits.max_streams,
                Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                Setting.MAX_FRAME_SIZE: MAX_FRAME,
                Setting.MAX_HEADER_LIST_SIZE: limits.max_header_list,
            }
        )
        self.out += window_update(0, CONNECTION_WINDOW - DEFAULT_WINDOW)

    # -- reading -----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take bytes from the client: handle every complete frame, queue the replies.

        DATA payloads are handed on as they arrive (views of ``data``, never copied here),
        so a large message is copied once, when the handler joins it.
        """
        if self.closed:
            return
        self.since = time.monotonic()
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        pos, end = 0, len(data)
        if not self._preface:
            if not data.startswith(PREFACE):
                if end < len(PREFACE) and PREFACE.startswith(data):
                    self._buf += data
                else:
                    self._bad_preface()
                return
            self._preface = True
            pos = len(PREFACE)
        view = memoryview(data)
        try:
            if self._data_left:
                pos = self._data_more(view, pos, end)
            while end - pos >= 9 and not self.closed:
                high, low, kind, flags, stream = HEAD.unpack_from(data, pos)
                size = high << 8 | low
                if size > MAX_FRAME:
                    raise H2Error(ErrorCode.FRAME_SIZE_ERROR, f"frame of {size} bytes")
                if kind == FrameType.DATA and not flags & Flag.PADDED and not self._continued:
                    self._data_start(flags, stream & 0x7FFFFFFF, size)
                    pos = self._data_more(view, pos + 9, end)
                    continue
                if end - pos - 9 < size:
                    break
                payload = data[pos + 9 : pos + 9 + size]
                pos += 9 + size
                try:
                    self._frame(kind, flags, stream & 0x7FFFFFFF, payload)
                except H2Error as error:
                    if not error.stream:
                        raise
                    self.reset(error.stream, error.code)
        except H2Error as error:
            self.fail(error.code, str(error))
            return
        if pos < end and not self.closed:
            self._buf += view[pos:end]

    def _data_start(self, flags: int, stream_id: int, size: int) -> None:
        """A DATA frame's header: account for the whole frame, find its stream."""
        self._data_stream = self._data_target(stream_id, size)
        self._data_left = size
        self._data_end = bool(flags & Flag.END_STREAM)

    def _data_more(self, view: memoryview, pos: int, end: int) -> int:
        """Hand on what arrived of the current DATA frame; returns the position after it."""
        take = min(self._data_left, end - pos)
        stream = self._data_stream
        self._data_left -= take
        if stream is not None:
            try:
                if take and not stream.answered:
                    chunk = view[pos : pos + take]
                    # A view keeps all that arrived with it alive: a few bytes of it are
                    # copied, so that what a stream holds is at most twice what it counts.
                    self._hold(stream, chunk if 2 * take >= end else bytes(chunk))
                    self._reply(stream, self.handler.received(self, stream))
                if not self._data_left and self._data_end:
                    self._end(stream)
            except H2Error as error:
                if not error.stream:
                    raise
                self.reset(error.stream, error.code)
        return pos + take

    def _bad_preface(self) -> None:
        # grpc-go closes such a connection without a word (it may not be HTTP/2 at all).
        self.closed = True
        self._buf.clear()

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._continued is not None and kind != FrameType.CONTINUATION:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "expected a CONTINUATION frame")
        if kind == FrameType.DATA:
            self._data(flags, stream, payload)
        elif kind == FrameType.HEADERS:
            self._headers(flags, stream, payload)
        elif kind == FrameType.CONTINUATION:
            self._continuation(flags, stream, payload)
        elif kind == FrameType.SETTINGS:
            self._settings(flags, stream, payload)
        elif kind == FrameType.WINDOW_UPDATE:
            self._window_update(stream, payload)
        elif kind == FrameType.PING:
            if stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING payload not 8 bytes")
            if not flags & Flag.ACK:
                self.out += frame(FrameType.PING, Flag.ACK, 0, payload)
        elif kind == FrameType.RST_STREAM:
            self._rst_stream(stream, payload)
        elif kind == FrameType.PRIORITY:
            if not stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY not 5 bytes", stream)
        elif kind == FrameType.GOAWAY:
            if stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            self.goaway(ErrorCode.NO_ERROR)  # the client leaves: finish what is open
        elif kind == FrameType.PUSH_PROMISE:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # Unknown frame types are ignored (RFC 9113 §4.1).

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        """A padded DATA frame, handled whole."""
        stream = self._data_target(stream_id, len(payload))
        data = _unpad(payload)
        if stream is not None:
            if data and not stream.answered:
                self._hold(stream, data)
                self._reply(stream, self.handler.received(self, stream))
            if flags & Flag.END_STREAM:
                self._end(stream)

    def _hold(self, stream: Stream, data: bytes | memoryview) -> None:
        """Add ``data`` to the stream's body, within what the server may hold.

        Windows bound each stream and the streams are capped, but a stream's window is
        given back as its data arrives: without this, each connection's calls in progress
        could hold a hundred messages at their largest (and twice that, see the handler).
        Past the bound the stream is refused, as not processed: a client may retry it.
        """
        held = self._held
        if held.bytes + len(data) > self.limits.max_held:
            text = f"request bodies past {self.limits.max_held} bytes held at once"
            raise H2Error(ErrorCode.REFUSED_STREAM, text, stream.id)
        stream.body.append(data)
        stream.size += len(data)
        held.bytes += len(data)

    def _let_go(self, stream: Stream) -> None:
        """The stream's body is not needed any more: free it now."""
        if stream.body:
            self._held.bytes -= stream.size
            stream.body = []

    def _data_target(self, stream_id: int, size: int) -> Stream | None:
        """Flow control for a DATA frame of ``size`` bytes; its stream, ``None`` to drop it."""
        if not stream_id:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        self._recv_window -= size
        if self._recv_window < 0:
            raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA past the connection window")
        if self._recv_window < CONNECTION_WINDOW // 2:
            self.out += window_update(0, CONNECTION_WINDOW - self._recv_window)
            self._recv_window = CONNECTION_WINDOW
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self.last_stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream is not None:
                raise H2Error(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", stream_id)
            return None  # a stream already answered or reset: its late data is dropped
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA past the stream window", stream_id)
        if stream.recv_window < STREAM_WINDOW // 2 and not stream.answered:
            self.out += window_update(stream_id, STREAM_WINDOW - stream.recv_window)
            stream.recv_window = STREAM_WINDOW
        return stream

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & Flag.PADDED:
            payload = _unpad(payload)
        if flags & Flag.PRIORITY:
            if len(payload) < 5:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if flags & Flag.END_HEADERS:
            self._block(stream_id, flags, payload)
        else:
            self._continued = (stream_id, flags, bytearray(payload))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continued is None or self._continued[0] != stream_id:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        block = self._continued[2]
        block += payload
        if len(block) > 4 * self.limits.max_header_list:
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & Flag.END_HEADERS:
            head_flags = self._continued[1]
            self._continued = None
            self._block(stream_id, head_flags, bytes(block))

    def _block(self, stream_id: int, flags: int, block: bytes) -> None:
        """A complete header block: a new request, or trailers of an open one."""
        try:
            headers: list[tuple[bytes, bytes]] | None = self._decoder.decode(block)
        except HPACKError as error:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, str(error)) from error
        except HeaderListTooLarge:
            headers = None
        end_stream = bool(flags & Flag.END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers
            if stream.remote_closed:
                raise H2Error(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM", stream_id)
            if not end_stream:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM", stream_id)
            self._end(stream)
            return
        if stream_id <= self.last_stream:
            raise H2Error(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self.last_stream = stream_id
        if self.goaway_sent:
            return  # after GOAWAY, new streams are ignored (RFC 9113 §6.8)
        if headers is None:
            # What grpc-go does with a header list past its limit.
            self.out += rst_stream(stream_id, ErrorCode.FRAME_SIZE_ERROR)
            return
        if not well_formed(headers):
            # RFC 9113 §8.2.1 and §8.3: a malformed request is a stream error.
            self.out += rst_stream(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        if len(self.streams) >= self.limits.max_streams:
            self.out += rst_stream(stream_id, ErrorCode.REFUSED_STREAM)
            return
        stream = Stream(stream_id, headers, self._peer_window)
        self.streams[stream_id] = stream
        self._reply(stream, self.handler.opened(self, stream))
        if end_stream:
            self._end(stream)

    def _end(self, stream: Stream) -> None:
        stream.remote_closed = True
        if not stream.answered:
            self._reply(stream, self.handler.ended(self, stream))
        elif stream.pending is None:
            self.streams.pop(stream.id, None)

    def _settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & Flag.ACK:
            if payload:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for pos in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, pos)
            if key == Setting.ENABLE_PUSH and value > 1:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta, self._peer_window = value - self._peer_window, value
                for each in self.streams.values():
                    each.send_window += delta
            elif key == Setting.MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_frame = value
            # HEADER_TABLE_SIZE: answers use no dynamic table, so any size suits them.
        self.out += frame(FrameType.SETTINGS, Flag.ACK, 0)
        self._resume()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0", stream_id)
        if not stream_id:
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id > self.last_stream:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow", stream_id)
        self._resume()

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if stream_id > self.last_stream:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.release()  # a late answer is not sent
            self._let_go(stream)
            if stream in self._blocked:
                self._blocked.remove(stream)

    # -- writing -----------------------------------------------------------------------

    def _reply(self, stream: Stream, answer: Answer | None) -> None:
        if answer is not None:
            self.answer(stream, answer)

    def answer(self, stream: Stream, answer: Answer) -> None:
        """Send ``answer`` on ``stream`` (unless it was reset or answered meanwhile)."""
        if stream.answered or self.closed:
            return
        stream.release()
        self._let_go(stream)
        if answer.head is None:
            self.out += headers_frames(stream.id, answer.trailers, True, self._peer_frame)
            self._done(stream)
            return
        self.out += headers_frames(stream.id, answer.head, False, self._peer_frame)
        stream.pending = (answer.data, answer.trailers)
        self._send(stream)
        if stream.pending is not None:
            self._blocked.append(stream)

    def _send(self, stream: Stream) -> None:
        """Send what the windows allow of the stream's pending data, then its trailers."""
        assert stream.pending is not None
        data, trailers = stream.pending
        while data:
            size = min(len(data), self._send_window, stream.send_window, self._peer_frame)
            if size <= 0:
                stream.pending = (data, trailers)
                return
            self.out += frame(FrameType.DATA, 0, stream.id, data[:size])
            data = data[size:]
            self._send_window -= size
            stream.send_window -= size
        stream.pending = None
        self.out += headers_frames(stream.id, trailers, True, self._peer_frame)
        self._done(stream)

    def _done(self, stream: Stream) -> None:
        if not stream.remote_closed:
            # The request is not finished: as grpc-go, end the client's half too.
            self.out += rst_stream(stream.id, ErrorCode.NO_ERROR)
            stream.remote_closed = True
        self.streams.pop(stream.id, None)

    def _resume(self) -> None:
        if not self._blocked:
            return
        blocked, self._blocked = self._blocked, []
        for stream in blocked:
            self._send(stream)
            if stream.pending is not None:
                self._blocked.append(stream)

    def reset(self, stream_id: int, code: int) -> None:
        """End a stream with RST_STREAM ``code``."""
        self.out += rst_stream(stream_id, code)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.release()
            self._let_go(stream)
            if stream in self._blocked:
                self._blocked.remove(stream)

    def goaway(self, code: int, debug: str = "") -> None:
        """Take no new streams (GOAWAY with the last stream id); open ones may finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out += goaway(self.last_stream, code, debug.encode()[:256])

    def drop(self) -> None:
        """Close without a word (no GOAWAY; what was queued is not sent)."""
        self.out.clear()
        self.end()

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``code`` and close."""
        self.goaway(code, message)
        self.end()

    def end(self) -> None:
        """No more frames are read or answers sent; every stream is over, its body freed."""
        self.closed = True
        for stream in self.streams.values():
            stream.release()
            self._let_go(stream)
        self.streams.clear()

    @property
    def handshaken(self) -> bool:
        """The client's preface arrived."""
        return self._preface

    @property
    def idle(self) -> bool:
        """No request in progress."""
        return not self.streams

    @property
    def finished(self) -> bool:
        """GOAWAY sent (or the client's read) and nothing left in flight."""
        return self.goaway_sent and not self.streams


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise H2Error(ErrorCode.PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1 : len(payload) - payload[0]]


assert TABLE_SIZE == 4096  # the default: no SETTINGS_HEADER_TABLE_SIZE needs sending
