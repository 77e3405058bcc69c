# -*- test-case-name: tests.test_documents -*-
"""
Reading JSON documents that clients, the index, an upstream registry or the storage supply.

Any of them may be hostile or broken, so one parser turns every way a document can be
unusable into a ValueError that the caller maps to the contract's answer, and what it
returns can always be rendered again by C{json.dumps}.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Far deeper than any document docker sends, and far below the interpreter's recursion
#: limit, which C{json.dumps} needs when a parsed document is rendered again.
MAX_DEPTH = 256


def parse_json(body: bytes) -> Any:
    """
    Decode C{body} as strict UTF-8 JSON (json.loads would also guess UTF-16 and UTF-32).

    @raise ValueError: the body is not UTF-8 or not JSON (an empty body is not JSON); it
        nests arrays and objects deeper than L{MAX_DEPTH}; it holds C{NaN} or C{Infinity},
        a number too large for a float (C{1e999999}) or an integer beyond Python's digit
        limit.
    """
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # Nesting needs an opening bracket per level: most documents have too few to look.
    openings = body.count(b"[") + body.count(b"{")
    if openings > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise ValueError("JSON nested too deeply")
    return value


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number out of range: {text[:20]}")
    return number


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every document (json.loads with options would build one per call).
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_not_json)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than C{limit} levels, found without recursion."""
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        container, depth = pending.pop()
        if depth > limit:
            return True
        children = container.values() if isinstance(container, dict) else container
        pending.extend(
            (child, depth + 1) for child in children if isinstance(child, (dict, list))
        )
    return False
