"""Values kept in memory within a budget (twistreg.lru), and what V1 keeps of complete images."""

from __future__ import annotations

import json
import os

import pytest
from twisted.internet.task import Clock

from tests.test_images import BASE, CHILD, ImagesTestCase, make_layer
from twistreg.lru import BoundedLRU
from twistreg.registry.images import COMPLETED_MAX_AGE as MAX_AGE


def test_values_past_the_budget_push_out_the_least_recently_used():
    kept = BoundedLRU(100)
    kept.keep("a", "A", 40)
    kept.keep("b", "B", 40)
    assert kept.get("a") == "A"  # "b" is now the least recently used
    kept.keep("c", "C", 40)
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == ("A", None, "C")


def test_a_value_larger_than_the_budget_is_not_kept():
    kept = BoundedLRU(100)
    kept.keep("a", "A", 60)
    kept.keep("big", "B", 101)
    assert (kept.get("a"), kept.get("big")) == ("A", None)


def test_keeping_a_key_again_replaces_its_value_and_size():
    kept = BoundedLRU(100)
    kept.keep("a", "A", 90)
    kept.keep("a", "A2", 10)
    kept.keep("b", "B", 90)
    assert (kept.get("a"), kept.get("b")) == ("A2", "B")


def test_values_are_read_again_after_their_age():
    clock = Clock()
    kept = BoundedLRU(100, max_age=60, clock=clock)
    kept.keep("a", "A", 10)
    clock.advance(59)
    assert kept.get("a") == "A"
    clock.advance(1)
    assert kept.get("a") is None
    kept.keep("b", "B", 100)  # the expired entry no longer counts
    assert kept.get("b") == "B"


class CompletedImagesTests(ImagesTestCase):
    def remove(self, key: str) -> None:
        os.unlink(os.path.join(self.root, key))

    def test_a_complete_image_is_served_without_reading_storage_again(self) -> None:
        body = self.push(BASE, make_layer({"a": b"1"}))
        self.assertTrue(self.done(self.images.check_json(BASE, None)))
        first = self.done(self.images.get_json(BASE))
        for name in ("json", "layer", "_checksum"):
            self.remove(f"images/{BASE}/{name}")
        self.assertTrue(self.done(self.images.check_json(BASE, None)))
        self.assertEqual(self.done(self.images.get_json(BASE)), first)
        self.assertEqual(first[0], body)
        self.assertEqual(self.done(self.images.check_layer(BASE, None)), first[1])
        # Until it is read again.
        self.reactor.advance(MAX_AGE)
        self.assertFalse(self.done(self.images.check_json(BASE, None)))
        self.assertIsNone(self.done(self.images.check_layer(BASE, None)))

    def test_an_image_without_its_layer_is_read_every_time(self) -> None:
        """Its layer may still come: its size would change."""
        self.put(f"images/{BASE}/json", json.dumps({"id": BASE}).encode())
        self.assertTrue(self.done(self.images.check_json(BASE, None)))
        self.assertIsNone(self.done(self.images.get_json(BASE))[1])
        self.put(f"images/{BASE}/layer", b"now here")
        self.assertEqual(self.done(self.images.get_json(BASE))[1], len(b"now here"))

    def test_the_ancestry_is_kept_once_read(self) -> None:
        self.push(BASE, make_layer({"a": b"1"}))
        self.push(CHILD, make_layer({"a": b"2"}), parent=BASE)
        self.assertTrue(self.done(self.images.check_ancestry(CHILD)))
        self.assertEqual(self.done(self.images.get_ancestry(CHILD)), [CHILD, BASE])
        self.remove(f"images/{CHILD}/ancestry")
        self.assertTrue(self.done(self.images.check_ancestry(CHILD)))
        self.assertEqual(self.done(self.images.get_ancestry(CHILD)), [CHILD, BASE])


def test_without_an_age_limit_values_stay_while_they_fit():
    kept = BoundedLRU(100)
    kept.keep("a", "A", 10)
    assert kept.get("a") == "A"
    with pytest.raises(ValueError):
        BoundedLRU(100, max_age=1)
