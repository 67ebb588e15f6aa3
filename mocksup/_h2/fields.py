"""Which request header fields are well formed (RFC 9113 §8.2.1, §8.3), as Go's HTTP/2
framer (grpc-go's) decides it."""

from __future__ import annotations

import re

__all__ = ("well_formed",)

#: What Go's HTTP/2 framer (grpc-go's) accepts (RFC 9113 §8.2.1): regular field names are
#: lower-case tokens, values hold no control character but tab.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_seen_good: set[tuple[bytes, bytes]] = set()  # fields already checked (most repeat)


def well_formed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether names and values are valid and the pseudo-headers come first."""
    regular = False
    for field in headers:
        name = field[0]
        if name[:1] == b":":
            if regular:
                return False
        else:
            regular = True
        if field in _seen_good:
            continue
        if not (name[:1] == b":" or _NAME.fullmatch(name)) or not _VALUE.fullmatch(field[1]):
            return False
        if len(_seen_good) > 4096:
            _seen_good.clear()
        _seen_good.add(field)
    return True
