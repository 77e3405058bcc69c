"""Reading the JSON documents clients send."""

from __future__ import annotations

import json
from typing import Any


def parse_json(body: bytes) -> Any:
    """
    Decode C{body} as strict UTF-8 JSON (json.loads would also guess UTF-16 and UTF-32).

    @raise ValueError: the body is not UTF-8 or not JSON; an empty body is not JSON.
    """
    return json.loads(body.decode("utf-8"))
