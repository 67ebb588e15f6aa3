"""HPACK's Huffman code (RFC 7541 Appendix B), decoded a nibble at a time.

The code is canonical: codes are handed out in order of length, then of symbol, so the
RFC's table is fully given by each symbol's code length (:data:`_LENGTHS`, symbols 0-255 and
256 for EOS); :func:`_codes` rebuilds the codes from them. Decoding reads the string as one
integer: a 256-entry table gives the codes of at most eight bits (the letters, digits and
common punctuation) in one look-up, and the longer ones are found canonically, a length at
a time. The tables take well under a millisecond to build, so the first request of a
connection does not wait for them.
"""

from __future__ import annotations

__all__ = ("HuffmanError", "huffman_decode", "huffman_encode")

# Code length of each symbol, 16 to a row (RFC 7541 Appendix B; the last is EOS).
_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # 32-47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # 48-63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # 64-79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 80-95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # 96-111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 112-127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 240-255
    30,  # EOS
)  # fmt: skip
_EOS = 256


class HuffmanError(ValueError):
    """A Huffman string that RFC 7541 forbids (EOS inside, or bad padding)."""


def _codes() -> list[int]:
    """The canonical code of each symbol, from :data:`_LENGTHS`."""
    codes = [0] * len(_LENGTHS)
    code, length = -1, 0
    for symbol in sorted(range(len(_LENGTHS)), key=lambda s: (_LENGTHS[s], s)):
        code = (code + 1) << (_LENGTHS[symbol] - length)
        length = _LENGTHS[symbol]
        codes[symbol] = code
    return codes


_CODES = _codes()


def _tables() -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """What decoding needs, built at import in well under a millisecond: ``fast[byte]`` is
    ``symbol << 5 | length`` for the codes of at most 8 bits that ``byte`` starts with (0
    for none); ``first``, ``count`` and ``offset`` per length, and the symbols in code
    order, decode the longer codes canonically."""
    order = sorted(range(len(_LENGTHS)), key=lambda s: (_LENGTHS[s], s))
    first, count, offset = [0] * 31, [0] * 31, [0] * 31
    for index, symbol in enumerate(order):
        length = _LENGTHS[symbol]
        if not count[length]:
            first[length], offset[length] = _CODES[symbol], index
        count[length] += 1
    fast = [0] * 256
    for symbol in order:
        length = _LENGTHS[symbol]
        if length > 8:
            break
        start = _CODES[symbol] << (8 - length)
        for byte in range(start, start + (1 << (8 - length))):
            fast[byte] = symbol << 5 | length
    return fast, first, count, offset, order


_FAST, _FIRST, _COUNT, _OFFSET, _ORDER = _tables()


def huffman_decode(data: bytes) -> bytes:
    """``data`` Huffman-decoded.

    :raises HuffmanError: EOS in the string, or padding that is not a short run of ones.
    """
    end = len(data) * 8
    # 32 one bits past the end: every look-ahead has bits to read, and they read as
    # padding would (no code fits in them but EOS's prefix).
    value = int.from_bytes(data, "big") << 32 | 0xFFFFFFFF
    total = end + 32
    out = bytearray()
    pos = 0
    while pos < end:
        entry = _FAST[(value >> (total - pos - 8)) & 0xFF]
        if entry:
            symbol, length = entry >> 5, entry & 31
        else:
            symbol, length = _long_code(value, total - pos)
        if pos + length > end:
            break  # what is left is padding, checked below
        if symbol == _EOS:
            raise HuffmanError("EOS in a Huffman string")
        out.append(symbol)
        pos += length
    left = end - pos
    if left > 7 or (value >> 32) & ((1 << left) - 1) != (1 << left) - 1:
        raise HuffmanError("bad padding in a Huffman string")
    return bytes(out)


def _long_code(value: int, bits_left: int) -> tuple[int, int]:
    """The symbol of more than 8 bits at the top of the ``bits_left`` low bits of ``value``."""
    for length in range(9, 31):
        code = (value >> (bits_left - length)) & ((1 << length) - 1)
        if 0 <= code - _FIRST[length] < _COUNT[length]:
            return _ORDER[_OFFSET[length] + code - _FIRST[length]], length
    raise AssertionError("the code is complete: 30 bits always decode")


def huffman_encode(data: bytes) -> bytes:
    """``data`` Huffman-encoded, padded with one bits."""
    acc, bits = 0, 0
    for byte in data:
        acc = acc << _LENGTHS[byte] | _CODES[byte]
        bits += _LENGTHS[byte]
    pad = -bits % 8
    acc = acc << pad | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")
