# -*- test-case-name: tests.test_gc -*-
"""What a collection removed (or, dry, would remove): a plain object a metrics module reads."""

from __future__ import annotations

from typing import Any

import attrs

#: The kinds of object a collection removes, in the order it removes them.
MANIFESTS = "manifests"
BLOB_LINKS = "blob links"
V1_IMAGES = "V1 images"
BRIDGE_RECORDS = "bridge records"
BLOBS = "blobs"
UPLOADS = "upload sessions"
KINDS = (MANIFESTS, BLOB_LINKS, V1_IMAGES, BRIDGE_RECORDS, BLOBS, UPLOADS)


@attrs.define
class Report:
    """
    One collection's outcome.

    @ivar objects: how many objects of each kind went (or would go, when C{dry_run}).
    @ivar bytes: how many bytes of each kind went.
    @ivar kept: how many objects of each kind were looked at and kept.
    @ivar listed: with C{dry_run}, every object that would go: C{kind}, C{key}, C{bytes}.
    @ivar seconds: how long it took.
    @ivar interrupted: it was stopped before the end (what went, went).
    """

    dry_run: bool = False
    objects: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KINDS, 0))
    bytes: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KINDS, 0))
    kept: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KINDS, 0))
    listed: list[dict[str, Any]] = attrs.field(factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def removed(self, kind: str, key: str, size: int) -> None:
        """Count an object that went (or would go)."""
        self.objects[kind] += 1
        self.bytes[kind] += size
        if self.dry_run:
            self.listed.append({"kind": kind, "key": key, "bytes": size})

    def keep(self, kind: str, count: int = 1) -> None:
        self.kept[kind] += count

    @property
    def total_objects(self) -> int:
        return sum(self.objects.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON would hold it (C{--json})."""
        return {
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "objects": self.total_objects,
            "bytes": self.total_bytes,
            "removed": {kind: {"objects": self.objects[kind], "bytes": self.bytes[kind]}
                        for kind in KINDS},
            "kept": dict(self.kept),
            **({"would_remove": self.listed} if self.dry_run else {}),
        }

    def summary(self, storage: str) -> str:
        """One line for a person."""
        verb = "would remove" if self.dry_run else "removed"
        parts = [f"{self.objects[kind]} {kind}" for kind in KINDS if self.objects[kind]]
        what = ", ".join(parts) if parts else "nothing"
        return (f"gc {verb} {what} ({_size(self.total_bytes)}) from {storage} storage"
                f" in {self.seconds:.2f} s")


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")
