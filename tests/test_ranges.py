"""The contract's Range table (docs/api.md), on a 5120-byte layer."""

from __future__ import annotations

import pytest

from twistreg.web.ranges import UNSATISFIABLE, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 5119)),
        ("bytes=100-5120", (100, 5119)),
        ("bytes=5110-20000", (5110, 5119)),
        ("bytes=5-5", (5, 5)),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-5119", (0, 5119)),
        (" BYTES=1-2 ", (1, 2)),
        ("bytes=100-50", UNSATISFIABLE),
        ("bytes=5120-", UNSATISFIABLE),
        ("bytes=-5", None),
        ("items=0-5", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes=0-1,4-5", None),
        ("bytes= 1-2", None),
    ],
)
def test_range_table(header, expected):
    assert parse_range(header, 5120) == expected


def test_empty_layer_is_unsatisfiable():
    assert parse_range("bytes=0-", 0) is UNSATISFIABLE
