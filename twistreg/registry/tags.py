# -*- test-case-name: tests.test_tags -*-
"""
The repository rules: tags, tag and repository metadata, visibility, deletion (R11–R19).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistreg.errors import RegistryError
from twistreg.layout import (
    Repository,
    image_json_key,
    private_flag_key,
    repository_entry_key,
    repository_json_key,
    tag_json_key,
    tag_key,
    tag_of_entry,
)
from twistreg.registry.documents import parse_json
from twistreg.registry.search import SearchIndex
from twistreg.storage.interface import IStorage, KeyNotFound

log = Logger()

_TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_USER_AGENT_PAIR = re.compile(r"([^\s/]+)/([^\s/]+)")

#: R16/R17's answer when no metadata is stored.
DEFAULT_METADATA = {
    "arch": "amd64",
    "docker_go_version": None,
    "docker_version": None,
    "kernel": None,
    "last_update": None,
    "os": "linux",
}


def tag_metadata(user_agent: str, now: float) -> dict[str, Any]:
    """
    R13's metadata: the update time and the client details of a docker User-Agent.

    As in 0.9.1, pair names match exactly (C{OS/x} is not C{os}) and only the values of
    C{arch}, C{kernel} and C{os} are lower-cased; the last pair of a name wins.
    """
    metadata: dict[str, Any] = {"last_update": int(now)}
    pairs = dict(_USER_AGENT_PAIR.findall(user_agent))
    for name, key in (("docker", "docker_version"), ("go", "docker_go_version")):
        if name in pairs:
            metadata[key] = pairs[name]
    for name in ("arch", "kernel", "os"):
        if name in pairs:
            metadata[name] = pairs[name].lower()
    return metadata


def _is_tag_value(content: bytes) -> bool:
    """Tag files hold an id; 0.9.1's C{tag_<x>_json} metadata names look alike but hold objects."""
    return not content.lstrip().startswith(b"{")


async def remove_tag(storage: IStorage, repository: Repository, tag: str) -> None:
    """Remove a tag and its metadata (the repository's too, for C{latest})."""
    await storage.remove(tag_key(repository, tag))
    await storage.remove(tag_json_key(repository, tag))
    if tag == "latest":
        await storage.remove(repository_json_key(repository))


#: Called by a tag PUT once its checks passed, before the tag is written.
BeforeTag = Callable[[Repository, str], Awaitable[object]]


class Tags:
    """
    The repository routes' rules over one storage.

    Reads of what a mirror may supply (R11, R12) return None when it is missing here.

    @param clock: gives R13's C{last_update}.
    @param search: the search index tags register repositories in, if search is on.
    @param before_tag: what R13 calls before it writes a tag (the V2 tag of that name
        goes: L{twistreg.bridge.tagspace}).
    """

    def __init__(
        self, storage: IStorage, clock: IReactorTime, search: SearchIndex | None = None,
        before_tag: BeforeTag | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._search = search
        self._before_tag = before_tag

    async def _list(self, repository: Repository) -> dict[str, str]:
        """The R11 listing: decoded tag name → image id."""
        tags = {}
        for entry in await self._storage.list_directory(repository.directory):
            tag = tag_of_entry(entry)
            if tag is None:
                continue
            try:
                content = await self._storage.get_content(repository_entry_key(repository, entry))
            except KeyNotFound:
                continue
            if _is_tag_value(content):
                tags[tag] = content.decode("utf-8", "replace")
        return tags

    async def _exists(self, repository: Repository) -> bool:
        """
        Whether anything is stored in the repository. A listing only names candidates: some
        S3-compatible stores list deleted keys for a while, so one must be there.
        """
        for entry in await self._storage.list_directory(repository.directory):
            if await self._storage.exists(repository_entry_key(repository, entry)):
                return True
        return False

    async def _require_repository(self, repository: Repository) -> None:
        if not await self._exists(repository):
            raise RegistryError(404, "Repository not found")

    # R11
    async def list_tags(self, repository: Repository) -> dict[str, str] | None:
        """R11: every tag of the repository; None when it does not exist."""
        if not await self._exists(repository):
            return None
        return await self._list(repository)

    # R12
    async def get_tag(self, repository: Repository, tag: str) -> str | None:
        """R12: the image id a tag points at; None when there is no such tag."""
        try:
            content = await self._storage.get_content(tag_key(repository, tag))
        except KeyNotFound:
            return None
        return content.decode("utf-8", "replace")

    # R13
    async def put_tag(
        self, repository: Repository, tag: str, body: bytes, user_agent: str
    ) -> None:
        """R13: point C{tag} at the image named by the JSON string C{body}."""
        if _TAG_NAME.fullmatch(tag) is None:
            raise RegistryError(400, r"Invalid tag name (must match ^[\w][\w.-]{0,127}$)")
        try:
            image_id = parse_json(body)
        except ValueError:
            image_id = None
        if not isinstance(image_id, str) or not image_id:
            raise RegistryError(400, "Invalid data")
        if not await self._storage.exists(image_json_key(image_id)):
            raise RegistryError(404, "Image not found")
        metadata = json.dumps(tag_metadata(user_agent, self._clock.seconds())).encode()
        if self._before_tag is not None:
            await self._before_tag(repository, tag)
        await self._storage.put_content(tag_key(repository, tag), image_id.encode("utf-8"))
        await self._storage.put_content(tag_json_key(repository, tag), metadata)
        if tag == "latest":
            await self._storage.put_content(repository_json_key(repository), metadata)
        if self._search is not None:
            await self._search.register(repository.key)

    # R14
    async def delete_tag(self, repository: Repository, tag: str) -> None:
        """R14: remove a tag and its metadata."""
        if not await self._storage.exists(tag_key(repository, tag)):
            raise RegistryError(404, f"Tag not found: {tag}")
        await remove_tag(self._storage, repository, tag)


    # R15
    async def delete_repository(self, repository: Repository) -> None:
        """R15: remove every tag, then the whole repository directory (images stay)."""
        await self._require_repository(repository)
        for tag in await self._list(repository):
            await remove_tag(self._storage, repository, tag)
        await self._storage.remove_tree(repository.directory)
        if self._search is not None:
            await self._search.remove(repository.key)

    # R16, R17
    async def repository_json(self, repository: Repository) -> Any | None:
        """R16: the metadata of the last C{latest} PUT, or None."""
        return await self._metadata(repository_json_key(repository))

    async def tag_json(self, repository: Repository, tag: str) -> Any | None:
        """R17: a tag's metadata, or None."""
        return await self._metadata(tag_json_key(repository, tag))

    async def _metadata(self, key: str) -> Any | None:
        """Stored metadata; None when it is missing or unreadable (the default answers)."""
        try:
            return parse_json(await self._storage.get_content(key))
        except KeyNotFound:
            return None
        except ValueError as error:
            log.warn("unreadable {key}: {error}", key=key, error=error)
            return None

    # R18, R19
    async def set_access(self, repository: Repository, body: bytes) -> None:
        """R18: C{{"access": "private"}} creates the C{_private} marker, C{public} removes it."""
        try:
            data = parse_json(body)
        except ValueError:
            data = None
        access = data.get("access") if isinstance(data, dict) else None
        if access == "private":
            await self._storage.put_content(private_flag_key(repository), b"")
        elif access == "public":
            await self._storage.remove(private_flag_key(repository))
        else:
            raise RegistryError(400, "Invalid data")

    async def get_access(self, repository: Repository) -> str:
        """R19: C{private} or C{public}."""
        private = await self._storage.exists(private_flag_key(repository))
        return "private" if private else "public"
