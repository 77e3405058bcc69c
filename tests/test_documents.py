"""L{twistreg.registry.documents.parse_json}: every unusable document is a ValueError."""

from __future__ import annotations

import json

import pytest

from twistreg.registry.documents import MAX_DEPTH, parse_json

DEEP = 100_000


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "body",
    [
        nested_arrays(DEEP),
        nested_objects(DEEP),
        b"[" * DEEP,
        b'{"id": "x", "config": ' + nested_arrays(DEEP) + b"}",
        nested_arrays(MAX_DEPTH + 1),
        nested_objects(MAX_DEPTH + 1),
        b"[" + b"[1], " * 300 + nested_arrays(MAX_DEPTH) + b"]",
        b"1e999999",
        b"[-1e999999]",
        b'{"size": 1' + b"0" * 5000 + b"}",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"",
        b"   ",
        b"\xff",
        b'"caf\xe9"',
        '"utf-16"'.encode("utf-16"),
        b'{"a": 1',
        b"[1] [2]",
    ],
    ids=[
        "arrays", "objects", "unclosed", "deep-inside", "arrays-over-limit",
        "objects-over-limit", "many-brackets-one-deep-branch", "huge-float",
        "huge-negative-float", "huge-int", "nan", "infinity", "minus-infinity", "empty",
        "blank", "not-utf8", "latin1", "utf16", "truncated", "two-documents",
    ],
)
def test_unusable_documents_are_value_errors(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


def test_value_error_has_no_cause() -> None:
    """A RecursionError inside the decoder is not chained to the ValueError."""
    with pytest.raises(ValueError) as raised:
        parse_json(nested_arrays(DEEP))
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"id": "a", "n": [1, 2.5, -3e10, true, null]}',
         {"id": "a", "n": [1, 2.5, -3e10, True, None]}),
        (b'"\\u00e9t\\u00e9"', "\u00e9t\u00e9"),
        (b"1e308", 1e308),
        (b"1" * 4000, int("1" * 4000)),
        (b" [] ", []),
        (b"[" + b"[1], " * 300 + b"[]]", [[1]] * 300 + [[]]),
    ],
)
def test_documents(body: bytes, value) -> None:
    assert parse_json(body) == value


@pytest.mark.parametrize("nest", [nested_arrays, nested_objects])
def test_limit_depth_renders_again_from_a_deep_stack(nest) -> None:
    """
    The deepest accepted document renders with json.dumps even when the caller is already
    hundreds of frames deep, as a web handler is.
    """
    document = parse_json(nest(MAX_DEPTH))

    def render_at(depth: int) -> str:
        if depth:
            return render_at(depth - 1)
        return json.dumps(document, sort_keys=True)

    assert json.loads(render_at(500)) == document
