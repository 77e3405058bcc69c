# -*- test-case-name: tests.test_ranges -*-
"""The contract's reading of a C{Range} header on a layer (RFC 9110, single range only)."""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]*)", re.IGNORECASE)

#: Digits beyond any size a layer can have (and below int()'s limit on digits).
_MAX_DIGITS = 30


class Unsatisfiable:
    """The range starts past the end, or ends before it starts: 416."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unsatisfiable)


UNSATISFIABLE = Unsatisfiable()


def parse_range(header: str | None, size: int) -> None | Unsatisfiable | tuple[int, int]:
    """
    The inclusive byte span C{(first, last)} asked for, L{UNSATISFIABLE}, or None when the
    header is absent or not a single C{bytes=N-[M]} range (then the whole layer is sent).
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    start, end = (digits.lstrip("0") or "0" for digits in match.groups())
    if len(start) > _MAX_DIGITS:
        return UNSATISFIABLE
    first = int(start)
    last = int(end) if match.group(2) and len(end) <= _MAX_DIGITS else size - 1
    if first >= size or last < first:
        return UNSATISFIABLE
    return first, min(last, size - 1)
