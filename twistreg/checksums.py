# -*- test-case-name: tests.test_checksums -*-
"""
Layer checksums (contract §8): the payload checksum the server checks, and tarsum v0 for tools.
"""

from __future__ import annotations

import hashlib
import math
import tarfile
from typing import BinaryIO

from twistreg.registry.layerfiles import open_layer

_CHUNK = 1 << 20

_TARSUM_FIELDS = (
    "name",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime",
    "typeflag",
    "linkname",
    "uname",
    "gname",
    "devmajor",
    "devminor",
)


class PayloadHasher:
    """
    The payload checksum computed while a layer streams in, so the layer is never re-read.

    @param image_json: the image JSON exactly as stored by R8.
    """

    __slots__ = ("_sha",)

    def __init__(self, image_json: bytes) -> None:
        self._sha = hashlib.sha256(image_json + b"\n")

    def update(self, chunk: bytes) -> None:
        # Called once per received chunk of multi-GiB layers: nothing but the hash here.
        self._sha.update(chunk)

    def checksum(self) -> str:
        """The value stored in C{_checksum} and compared verbatim by R5."""
        return "sha256:" + self._sha.hexdigest()


def payload_checksum(image_json: bytes, layer: bytes) -> str:
    """The payload checksum of a layer held in memory (tests and tools)."""
    hasher = PayloadHasher(image_json)
    hasher.update(layer)
    return hasher.checksum()


def tarsum(image_json: bytes, layer: BinaryIO) -> str:
    """
    Docker's tarsum v0 (C{tarsum+sha256:<hex>}), which docker 1.x sends and twistreg never checks.

    Extended headers are not members and their extra records (xattrs...) are not hashed; the
    name, sizes and times they carry are, as tarfile applies them to the member they describe.

    @param layer: a plain, gzip, bzip2 or xz tar stream, read once, forward only.
    @raise twistreg.registry.layerfiles.LayerFormatError: the layer is not a readable tar.
    """
    digests = []
    with open_layer(layer) as tar:
        for member in tar:
            sha = hashlib.sha256(_tarsum_header(member))
            # Content is whatever the archive holds after the header: regular files, and
            # members of unknown types, as docker's tar reader and 0.9.1's extractfile see it.
            if member.size > 0 and (member.isreg() or member.type not in tarfile.SUPPORTED_TYPES):
                content = tar.extractfile(member)
                while chunk := content.read(_CHUNK):
                    sha.update(chunk)
            digests.append(sha.hexdigest())
    digests.sort()
    return "tarsum+sha256:" + hashlib.sha256(image_json + "".join(digests).encode()).hexdigest()


def _tarsum_header(member: tarfile.TarInfo) -> bytes:
    name = member.name
    if member.isdir() and not name.endswith("/"):
        name += "/"
    values = (
        name,
        member.mode,
        member.uid,
        member.gid,
        member.size,
        # A pax mtime is fractional; docker hashes whole seconds (Go's Time.Unix floors).
        math.floor(member.mtime),
        member.type.decode("latin-1"),
        member.linkname,
        member.uname,
        member.gname,
        member.devmajor,
        member.devminor,
    )
    text = "".join(f"{field}{value}" for field, value in zip(_TARSUM_FIELDS, values))
    # surrogateescape gives back the raw header bytes of names that are not valid UTF-8.
    return text.encode("utf-8", "surrogateescape")
