"""
The repository rules (R11–R19) called directly, over a temporary local storage: hostile or
odd bodies and stored documents get the contract's answers, never a 500.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from tests.test_images import BASE, DEEP_ARRAYS, DEEP_OBJECTS, ImagesTestCase
from twistreg.layout import parse_repository
from twistreg.registry.tags import Tags

REPOSITORY = parse_repository("foo/bar")
DIRECTORY = "repositories/foo/bar"


class TagsTestCase(ImagesTestCase):
    def setUp(self) -> None:
        super().setUp()
        clock = Clock()
        clock.advance(1416566400)
        self.tags = Tags(self.storage, clock)
        self.done(self.images.put_json(BASE, json.dumps({"id": BASE}).encode(), None, None))

    def put_tag(self, body: bytes, tag: str = "latest") -> None:
        self.done(self.tags.put_tag(REPOSITORY, tag, body, "docker/1.3.2 os/Linux"))

    def refused_tag(self, body: bytes, tag: str = "latest") -> tuple[int, str]:
        return self.refused(self.tags.put_tag(REPOSITORY, tag, body, ""))


class PutTagTests(TagsTestCase):
    def test_tag(self) -> None:
        self.put_tag(json.dumps(BASE).encode())
        self.assertEqual(self.stored(f"{DIRECTORY}/tag_latest"), BASE.encode())
        self.assertEqual(json.loads(self.stored(f"{DIRECTORY}/taglatest_json")),
                         {"docker_version": "1.3.2", "last_update": 1416566400, "os": "linux"})
        self.assertEqual(self.done(self.tags.list_tags(REPOSITORY)), {"latest": BASE})

    def test_not_a_json_string(self) -> None:
        """R13 step 4: deep, non-JSON and non-string bodies are 400 C{Invalid data}."""
        for body in (DEEP_ARRAYS, DEEP_OBJECTS, b'"' + BASE.encode(), b"1e999999", b"12",
                     b"null", b'""', b"[" + json.dumps(BASE).encode() + b"]",
                     b'{"id": "' + BASE.encode() + b'"}', b"\xff", b""):
            self.assertEqual(self.refused_tag(body), (400, "Invalid data"))
        self.assertEqual(self.done(self.tags.list_tags(REPOSITORY)), None)

    def test_strings_that_name_no_image(self) -> None:
        """R13 step 5: any other string is simply not found, lone surrogates included."""
        for value in ("../../etc", "..", "a/b", "\ud800", BASE.upper(), "x" * 300):
            self.assertEqual(self.refused_tag(json.dumps(value).encode()),
                             (404, "Image not found"))

    def test_tag_name_checked_first(self) -> None:
        self.assertEqual(self.refused_tag(DEEP_ARRAYS, tag="$x"),
                         (400, r"Invalid tag name (must match ^[\w][\w.-]{0,127}$)"))


class MetadataTests(TagsTestCase):
    def test_unreadable_metadata_is_missing(self) -> None:
        """R16/R17 answer the default object for stored metadata they cannot render."""
        self.put_tag(json.dumps(BASE).encode())
        for stored in (DEEP_ARRAYS, DEEP_OBJECTS, b"[" * 300 + b"]" * 300, b"1e999999",
                       b'{"last_update": NaN}', b"\xff"):
            self.put(f"{DIRECTORY}/taglatest_json", stored)
            self.put(f"{DIRECTORY}/json", stored)
            self.assertIsNone(self.done(self.tags.tag_json(REPOSITORY, "latest")))
            self.assertIsNone(self.done(self.tags.repository_json(REPOSITORY)))

    def test_readable_metadata(self) -> None:
        self.put(f"{DIRECTORY}/taglatest_json", b'{"b": [1, {"c": null}], "a": 1}')
        self.assertEqual(self.done(self.tags.tag_json(REPOSITORY, "latest")),
                         {"a": 1, "b": [1, {"c": None}]})


class AccessTests(TagsTestCase):
    def test_private_and_public(self) -> None:
        self.done(self.tags.set_access(REPOSITORY, b'{"access": "private"}'))
        self.assertEqual(self.stored(f"{DIRECTORY}/_private"), b"")
        self.assertEqual(self.done(self.tags.get_access(REPOSITORY)), "private")
        self.done(self.tags.set_access(REPOSITORY, b'{"access": "public"}'))
        self.assertEqual(self.done(self.tags.get_access(REPOSITORY)), "public")

    def test_invalid_bodies(self) -> None:
        """R18 step 3: 400 C{Invalid data} for deep, non-JSON and misshapen bodies."""
        for body in (DEEP_ARRAYS, DEEP_OBJECTS, b'{"access": ' + DEEP_ARRAYS + b"}",
                     b'{"access": 1e999999}', b'{"access": ["private"]}',
                     b'{"access": {"private": true}}', b'"private"', b'["private"]',
                     b'{"access": "Private"}', b"{}", b""):
            self.assertEqual(self.refused(self.tags.set_access(REPOSITORY, body)),
                             (400, "Invalid data"))
        self.assertEqual(self.done(self.tags.get_access(REPOSITORY)), "public")


class UserAgentTests(TagsTestCase):
    def test_odd_user_agents(self) -> None:
        """Any header text gives metadata that stores and reads back (R13, R17)."""
        for user_agent in ("docker/\xe9\xff os/\x00\x7f", "docker/\ud800", "a/b " * 5000, ""):
            self.done(self.tags.put_tag(REPOSITORY, "v1", json.dumps(BASE).encode(),
                                        user_agent))
            metadata = self.done(self.tags.tag_json(REPOSITORY, "v1"))
            self.assertEqual(metadata["last_update"], 1416566400)
        self.assertEqual(self.done(self.tags.list_tags(REPOSITORY)), {"v1": BASE})
