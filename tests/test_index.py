"""
The standalone index rules (R22, R23) called directly, over a temporary local storage.
"""

from __future__ import annotations

from tests.test_images import DEEP_ARRAYS, DEEP_OBJECTS, ImagesTestCase
from twistreg.layout import parse_repository
from twistreg.registry.index import Index, make_token

REPOSITORY = parse_repository("foo/m")
INDEX_IMAGES = "repositories/foo/m/_index_images"


class IndexTests(ImagesTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.index = Index(self.storage)

    def put_images(self, body: bytes) -> None:
        self.done(self.index.put_images(REPOSITORY, body))

    def test_contract_example(self) -> None:
        """§4.23: the first list verbatim, then folded by id."""
        first = b'[{"checksum": "c1", "id": "a", "extra": 1}, {"id": "b"}]'
        self.put_images(first)
        self.assertEqual(self.done(self.index.get_images(REPOSITORY)), first)
        self.put_images(b'[{"id": "a"}, {"checksum": "c2", "id": "b"}, {"id": "c"}]')
        self.assertEqual(
            self.done(self.index.get_images(REPOSITORY)),
            b'[{"checksum": "c1", "id": "a"}, {"checksum": "c2", "id": "b"}, {"id": "c"}]')

    def test_not_json(self) -> None:
        """R22 step 3: deep and non-JSON bodies are 400 C{Error Decoding JSON}."""
        for body in (DEEP_ARRAYS, DEEP_OBJECTS, b"[" + DEEP_OBJECTS + b"]", b"[1e999999]",
                     b"[NaN]", b"\xff", b"", b"[{]"):
            self.assertEqual(self.refused(self.index.put_images(REPOSITORY, body)),
                             (400, "Error Decoding JSON"))
        self.assertIsNone(self.done(self.index.get_images(REPOSITORY)))

    def test_not_a_list_of_images(self) -> None:
        """R22 steps 4 and 5: 400 C{Invalid data}."""
        for body in (b'{"id": "a"}', b'"a"', b"12", b"null", b'["a"]', b"[[]]",
                     b'[{"id": 1}]', b'[{"id": ["a"]}]', b'[{"id": null}]', b'[{"Tag": "x"}]',
                     b'[{"id": "a"}, 5]'):
            self.assertEqual(self.refused(self.index.put_images(REPOSITORY, body)),
                             (400, "Invalid data"))
        self.assertIsNone(self.done(self.index.get_images(REPOSITORY)))

    def test_unreadable_stored_list(self) -> None:
        """A stored list that cannot be read counts as empty: the new list replaces it."""
        for stored in (DEEP_ARRAYS, DEEP_OBJECTS, b"[1e999999]", b'{"id": "a"}', b"[5, null]"):
            self.put(INDEX_IMAGES, stored)
            self.put_images(b'[{"id": "a", "checksum": "c"}]')
            self.assertEqual(self.stored(INDEX_IMAGES), b'[{"checksum": "c", "id": "a"}]')

    def test_token(self) -> None:
        token = make_token(parse_repository("busybox"), "read")
        self.assertRegex(token, r'^Token signature=[A-Z0-9]{16},'
                                r'repository="library/busybox",access=read$')
