"""HPACK's Huffman code (RFC 7541 Appendix B), decoded a nibble at a time.

The code is canonical: codes are handed out in order of length, then of symbol, so the
RFC's table is fully given by each symbol's code length (:data:`_LENGTHS`, symbols 0-255 and
256 for EOS); :func:`_codes` rebuilds the codes from them. Decoding walks a state machine
built once from the code tree: each state is an inner node, each step eats four bits and
yields at most one symbol (no code is shorter than five bits), so a string costs two table
look-ups per byte instead of a loop per bit.
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


def _machine() -> tuple[list[int], bytes]:
    """The nibble state machine: ``steps[state * 16 + nibble]`` is ``next_state << 9 | emit``
    where ``emit`` is 256 + symbol or 0 (nothing), or -1 for a forbidden path (EOS);
    ``ends[state]`` says whether a string may end in that state (padding: at most 7 one
    bits, RFC 7541 §5.2)."""
    # The tree: node 0 is the root; children[node] = [zero, one], a child < 0 is a leaf ~symbol.
    children: list[list[int]] = [[0, 0]]
    for symbol, code in enumerate(_CODES):
        node = 0
        for shift in range(_LENGTHS[symbol] - 1, -1, -1):
            bit = (code >> shift) & 1
            if shift == 0:
                children[node][bit] = ~symbol
            else:
                if not children[node][bit]:
                    children.append([0, 0])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    # A state may end a string when it is reached from the root by fewer than 8 one bits.
    ends = bytearray(len(children))
    node, depth = 0, 0
    while node >= 0 and depth < 8:
        ends[node] = 1
        node, depth = children[node][1], depth + 1
    steps: list[int] = []
    for state in range(len(children)):
        for nibble in range(16):
            node, emit = state, 0
            for shift in (3, 2, 1, 0):
                node = children[node][(nibble >> shift) & 1]
                if node < 0:
                    if ~node == _EOS:
                        emit = -1
                        break
                    emit, node = 256 + ~node, 0
            steps.append(-1 if emit < 0 else node << 9 | emit)
    return steps, bytes(ends)


_machine_cache: tuple[list[int], bytes] | None = None


def huffman_decode(data: bytes) -> bytes:
    """``data`` Huffman-decoded.

    :raises HuffmanError: EOS in the string, or padding that is not a short run of ones.
    """
    global _machine_cache
    if _machine_cache is None:
        # Built on first use (a few ms): many connections never send a Huffman string.
        _machine_cache = _machine()
    steps, ends = _machine_cache
    out = bytearray()
    state = 0
    for byte in data:
        for nibble in (byte >> 4, byte & 15):
            step = steps[state << 4 | nibble]
            if step < 0:
                raise HuffmanError("EOS in a Huffman string")
            if step & 511:
                out.append(step & 255)
            state = step >> 9
    if not ends[state]:
        raise HuffmanError("bad padding in a Huffman string")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """``data`` Huffman-encoded, padded with one bits."""
    acc, bits = 0, 0
    for byte in data:
        acc = acc << _LENGTHS[byte] | _CODES[byte]
        bits += _LENGTHS[byte]
    pad = -bits % 8
    acc = acc << pad | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")
