"""HPACK (RFC 7541): the request header decoder and the few encodings answers need.

The decoder keeps the dynamic table within the size the server advertised
(:data:`TABLE_SIZE`; a size update above it is an error) and bounds the decoded header list
(names plus values plus 32 bytes each, RFC 9113 §6.5.2), so a small block cannot expand
into a large allocation. Answers are encoded statelessly (static-table indices and literals
that are never indexed), so the server keeps no encoder table per connection.
"""

from __future__ import annotations

from mocksup._h2.huffman import HuffmanError, huffman_decode

__all__ = ("STATIC", "TABLE_SIZE", "HPACKError", "HeaderDecoder", "HeaderListTooLarge", "literal")

#: The dynamic table size the server allows (SETTINGS_HEADER_TABLE_SIZE's default).
TABLE_SIZE = 4096

#: RFC 7541 Appendix A: index 1 is the first entry.
STATIC: tuple[tuple[bytes, bytes], ...] = tuple(
    (name.encode(), value.encode())
    for name, value in (
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
        (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"),
        (":status", "200"), (":status", "204"), (":status", "206"), (":status", "304"),
        (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
        ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
        ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
        ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""),
        ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""),
        ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
        ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
        ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
        ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""),
        ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
        ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
        ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    )
)  # fmt: skip
_STATIC_COUNT = len(STATIC)


class HPACKError(ValueError):
    """A header block that cannot be decoded (COMPRESSION_ERROR)."""


class HeaderListTooLarge(ValueError):
    """A header list past the advertised SETTINGS_MAX_HEADER_LIST_SIZE."""


class HeaderDecoder:
    """One connection's decoding context: its dynamic table, newest entry first.

    :param max_list: the largest decoded header list accepted, RFC 9113's size.
    """

    def __init__(self, max_list: int) -> None:
        self.max_list = max_list
        self._table: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._limit = TABLE_SIZE

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header list ``block`` encodes, in order; updates the dynamic table.

        :raises HPACKError: a malformed block (the connection cannot go on).
        :raises HeaderListTooLarge: the list is too large; the table is still in step.
        """
        headers: list[tuple[bytes, bytes]] = []
        pos, end, total = 0, len(block), 0
        too_large = False
        try:
            while pos < end:
                byte = block[pos]
                if byte & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 7)
                    header = self._entry(index)
                elif byte & 0x40:  # literal with incremental indexing
                    header, pos = self._literal(block, pos, 6)
                    self._add(header)
                elif byte & 0x20:  # dynamic table size update
                    if headers:
                        raise HPACKError("table size update after a header")
                    size, pos = _integer(block, pos, 5)
                    if size > TABLE_SIZE:
                        raise HPACKError(f"table size update to {size} > {TABLE_SIZE}")
                    self._limit = size
                    self._evict(0)
                    continue
                else:  # literal without indexing, or never indexed
                    header, pos = self._literal(block, pos, 4)
                total += len(header[0]) + len(header[1]) + 32
                if total > self.max_list:
                    too_large = True
                if not too_large:
                    headers.append(header)
        except (IndexError, HuffmanError) as error:
            raise HPACKError(f"malformed header block: {error}") from error
        if too_large:
            raise HeaderListTooLarge(f"header list larger than {self.max_list} bytes")
        return headers

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if index == 0 or dynamic >= len(self._table):
            raise HPACKError(f"header index {index} out of range")
        return self._table[dynamic]

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[tuple[bytes, bytes], int]:
        index, pos = _integer(block, pos, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return (name, value), pos

    def _add(self, header: tuple[bytes, bytes]) -> None:
        size = len(header[0]) + len(header[1]) + 32
        self._evict(size)
        if size <= self._limit:  # a larger entry empties the table and is not added
            self._table.insert(0, header)
            self._size += size

    def _evict(self, room: int) -> None:
        while self._table and self._size + room > self._limit:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """The integer at ``pos`` with an N-bit prefix (RFC 7541 §5.1), and the position after."""
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:  # past 2**32: no header field or index is that large
            raise HPACKError("integer too large in a header block")


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    if pos + length > len(block):
        raise HPACKError("string runs past the header block")
    data = block[pos : pos + length]
    return (huffman_decode(data) if huffman else data), pos + length


def literal(name: bytes, value: bytes) -> bytes:
    """``name: value`` as a literal never added to a table, name and value as raw strings
    (or the name by its static index when it has one)."""
    index = next((i for i, (n, _) in enumerate(STATIC, 1) if n == name), 0)
    head = _encode_integer(index, 4, 0x00) if index else b"\x00" + _encode_string(name)
    return head + _encode_string(value)


def _encode_string(data: bytes) -> bytes:
    return _encode_integer(len(data), 7, 0) + data


def _encode_integer(value: int, prefix: int, flags: int) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
