"""
The access rules of §5 called directly: an index that answers hostile JSON, stored lists
that cannot be read, and the markers a token's repository key names.
"""

from __future__ import annotations

import json
import os

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.test_images import BASE, DEEP_ARRAYS, DEEP_OBJECTS, ImagesTestCase
from twistreg.config import load_settings
from twistreg.registry.auth import Access, Authorizer, IndexClient

TOKEN = 'Token signature=s,repository="foo/bar",access=write'


class _Answer:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self._body = body

    def content(self) -> defer.Deferred[bytes]:
        return defer.succeed(self._body)


class FakeIndex:
    """A treq client whose every GET gets the same answer; it records the URLs asked."""

    def __init__(self, code: int = 200, body: bytes = b"[]") -> None:
        self.code, self.body = code, body
        self.asked: list[str] = []
        self.headers: list[dict] = []

    def get(self, url: str, headers: dict) -> defer.Deferred[_Answer]:
        self.asked.append(url)
        self.headers.append(headers)
        return defer.succeed(_Answer(self.code, self.body))


HOSTILE = (DEEP_ARRAYS, DEEP_OBJECTS, b"[" + DEEP_OBJECTS + b"]", b'[{"id": 1e999999}]',
           b'{"access": NaN}', b"\xff\xfe")


class TokenModeTests(ImagesTestCase):
    def setUp(self) -> None:
        super().setUp()
        settings = attrs.evolve(
            load_settings(None, environ={}, system_config_path=None), standalone=False
        )
        self.http = FakeIndex()
        client = IndexClient("https://index", self.http, Clock(), 30)
        self.auth = Authorizer(settings, self.storage, Clock(), client)

    def authorize(self, authorization: str = TOKEN):
        return self.auth.authorize(Access.WRITE, authorization, None)

    def test_hostile_index_answers_are_refusals(self) -> None:
        """An image list the index sends but that cannot be read is a 401, not a 500."""
        for body in HOSTILE + (b'[{"Id": "a"}]', b'{"id": "a"}'):
            self.http.body = body
            self.assertEqual(self.refused(self.authorize()), (401, "Requires authorization"))
        self.assertEqual(self.http.asked[-1], "https://index/v1/repositories/foo/bar/images")

    def test_listed_images_stored_by_repository_key(self) -> None:
        self.http.body = json.dumps([{"id": BASE}, {"id": "x", "checksum": "c"}]).encode()
        token = self.done(self.authorize())
        self.assertEqual(json.loads(self.stored("repositories/foo/bar/_images_list")),
                         [BASE, "x"])
        self.done(self.auth.image_in_repository(token, BASE))
        self.assertEqual(self.refused(self.auth.image_in_repository(token, "b" * 64)),
                         (400, "This image does not belong to the repository"))

    def test_unreadable_images_list(self) -> None:
        """R8 step 6: a stored list that cannot be read lists nothing."""
        self.http.body = json.dumps([{"id": BASE}]).encode()
        token = self.done(self.authorize())
        for stored in (DEEP_ARRAYS, b"[" * 300 + b'"' + BASE.encode() + b'"' + b"]" * 300,
                       b'["' + BASE.encode() + b'", 1e999999]', b'{"' + BASE.encode() + b'": 1}'):
            self.put("repositories/foo/bar/_images_list", stored)
            self.assertEqual(self.refused(self.auth.image_in_repository(token, BASE)),
                             (400, "This image does not belong to the repository"))

    def test_private_check_with_hostile_access_answers(self) -> None:
        """§5.4: the marker named by the token's key; an unreadable answer denies access."""
        self.put("repositories/foo/bar/_private", b"")
        for body in HOSTILE + (b'{"access": "true"}', b"[true]"):
            self.http.body = body
            self.assertEqual(self.refused(self.auth.check_private(TOKEN, BASE)),
                             (404, "Image not found"))
        self.http.body = b'{"access": true}'
        self.done(self.auth.check_private(TOKEN, BASE))
        self.assertEqual(self.http.asked[-1],
                         f"https://index/v1/repositories/foo/bar/layer/{BASE}/access")

    def test_public_repository_asks_nothing(self) -> None:
        self.done(self.auth.check_private(TOKEN, BASE))
        self.done(self.auth.check_private('Token repository="busybox"', BASE))
        self.assertEqual(self.http.asked, [])

    def test_parent_check_with_hostile_access_answers(self) -> None:
        for body in HOSTILE:
            self.http.body = body
            self.assertEqual(self.refused(self.auth.check_parent(TOKEN, BASE)),
                             (400, "Image depends on an unauthorized parent"))

    def test_token_repository_stays_in_the_path(self) -> None:
        """A key with characters a URL path does not take is escaped, not cut at C{?}."""
        self.http.body = b'[{"id": "a"}]'
        self.done(self.authorize('Token signature=s,repository="f o/b?r#x",access=write'))
        self.assertEqual(self.http.asked, ["https://index/v1/repositories/f%20o/b%3Fr%23x/images"])
        self.assertEqual(json.loads(self.stored("repositories/f+o/b%3Fr%23x/_images_list")),
                         ["a"])

    def test_authorization_forwarded_as_sent(self) -> None:
        """The header the web layer decoded as latin-1 goes out as the client's bytes."""
        self.http.body = b'[{"id": "a"}]'
        sent = b'Token signature=\xe9\xff,repository="foo/bar",access=write'
        self.done(self.authorize(sent.decode("latin-1")))
        self.assertEqual(self.http.headers, [{b"Authorization": [sent]}])

    def test_token_repository_with_an_empty_part(self) -> None:
        """Such a token names no repository: 401, and nothing is asked or stored."""
        for repository in ("/", "foo/", "/bar"):
            token = f'Token signature=s,repository="{repository}",access=write'
            self.assertEqual(self.refused(self.authorize(token)), (401, "Requires authorization"))
            self.done(self.auth.check_private(token, BASE))
        self.assertEqual((self.http.asked, os.listdir(self.root)), ([], []))
