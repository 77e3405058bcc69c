"""
The storage a test server runs on, local or S3, and a look inside it that does not go
through twistreg: the same conformance tests run on both (the C{backend} fixture).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.server import Server
from twistreg.config import BUILTIN_FLAVOR


class LocalTree:
    """A storage directory."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root

    def server(self, tmp: Path, *args: str, **kwargs: Any) -> Server:
        return Server(tmp, self.root, *args, **kwargs)

    def names(self, directory: str) -> list[str]:
        """The entries of a directory, temporary files of writes in flight included."""
        path = self.root / directory
        return sorted(os.listdir(path)) if path.is_dir() else []

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def uploading(self, directory: str) -> bool:
        """Whether a write under C{directory} is in flight (a temporary file)."""
        return any(name.startswith(".tmp-") for name in self.names(directory))


class S3Tree:
    """A key prefix in the test S3 server's bucket (tests/services.py)."""

    kind = "s3"

    def __init__(self, seaweedfs, prefix: str, tmp: Path) -> None:
        self._server = seaweedfs
        self.prefix = prefix
        self._base = prefix.lstrip("/") + "/"
        self._client = seaweedfs.boto3_client()
        self.config = tmp / "s3-config.yml"
        # The built-in defaults that a local test server runs with, on S3.
        flavor = dict(BUILTIN_FLAVOR, **seaweedfs.settings_keys(prefix),
                      sqlalchemy_index_database=f"sqlite:///{tmp / 'search.db'}")
        self.config.write_text(yaml.safe_dump({"dev": flavor}))

    def server(self, tmp: Path, *args: str, **kwargs: Any) -> Server:
        return Server(tmp, self.prefix, "--config", str(self.config), *args, **kwargs)  # type: ignore[arg-type]

    def names(self, directory: str) -> list[str]:
        prefix = self._base + directory.strip("/") + "/"
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._server.bucket, Prefix=prefix, Delimiter="/")
        found = set()
        for page in pages:
            found.update(item["Key"][len(prefix):] for item in page.get("Contents", []))
            found.update(item["Prefix"][len(prefix):].rstrip("/")
                         for item in page.get("CommonPrefixes", []))
        return sorted(found)

    def read(self, key: str) -> bytes | None:
        try:
            answer = self._client.get_object(Bucket=self._server.bucket, Key=self._base + key)
        except self._client.exceptions.NoSuchKey:
            return None
        return answer["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self._server.bucket, Key=self._base + key, Body=data)

    def uploading(self, directory: str) -> bool:
        """Whether a multipart upload under C{directory} is unfinished."""
        found = self._client.list_multipart_uploads(
            Bucket=self._server.bucket, Prefix=self._base + directory.strip("/") + "/")
        return bool(found.get("Uploads"))


def open_backend(request, kind: str, tmp: Path) -> LocalTree | S3Tree:
    """The backend of a C{backend} fixture's parameter."""
    if kind == "local":
        return LocalTree(tmp / "storage")
    seaweedfs = request.getfixturevalue("seaweedfs")
    return S3Tree(seaweedfs, seaweedfs.fresh_prefix(), tmp)
