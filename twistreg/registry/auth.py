# -*- test-case-name: tests.test_auth -*-
"""
Who may do what (docs/api.md): open access in standalone mode, tokens validated by the index
otherwise, and the index's word on private repositories and parent images.

Index answers are cached for C{token_cache_ttl} seconds, so a pull of thirty layers costs one
round trip, not thirty: in the process, and, with a C{cache} Redis, for every process and node
(a pull spread over nodes still costs one).  Redis holds a hash of each token, never the token.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from typing import Any
from urllib.parse import quote as percent_encode

import attrs
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistreg.config import Settings
from twistreg.errors import RegistryError
from twistreg.layout import (
    Repository,
    images_list_key,
    is_repository_key,
    private_flag_key_from_key,
)
from twistreg.rediscache import RedisClient, RedisUnavailable, namespace
from twistreg.registry.documents import parse_json
from twistreg.storage.interface import IStorage, KeyNotFound

log = Logger()

_PAIRS = re.compile(r'(\w+)[:=][\s"]?([^",]+)"?')


class Access(enum.Enum):
    """
    What a route does to the registry, as a route declares it: a token's C{access} pair
    must grant it (§5.2 step 4; C{write} covers PUT and POST, C{read} GET and HEAD).
    """

    READ = "read"
    WRITE = "write"
    DELETE = "delete"


#: The C{access} values a token may restrict itself to; any other value allows every route.
_RESTRICTING = frozenset(access.value for access in Access)


def _unauthorized() -> RegistryError:
    return RegistryError(401, "Requires authorization", {"WWW-Authenticate": "Token"})


def _unreachable() -> RegistryError:
    return RegistryError(502, "Index unreachable")


def token_pairs(authorization: str) -> dict[str, str]:
    """The key/value pairs of an C{Authorization} value; the last duplicate wins."""
    return dict(_PAIRS.findall(authorization))


@attrs.frozen
class Token:
    """A token that passed the checks: the repository key it names and its raw header."""

    repository: str
    authorization: str


class IndexUnreachable(Exception):
    """The index did not answer in time, or could not be connected to."""


class IndexClient:
    """
    The two index calls a registry makes, with the client's C{Authorization} forwarded.

    @param http: a treq client (its agent verifies TLS).
    @param timeout: seconds for a whole call, answer body included.
    """

    def __init__(self, endpoint: str, http: HTTPClient, clock: IReactorTime, timeout: float):
        self._endpoint = endpoint
        self._http = http
        self._clock = clock
        self._timeout = timeout

    async def _get_json(self, path: str, authorization: str) -> tuple[int, Any]:
        """
        @param path: holds the repository key of the client's token: what a URL path does
            not take (space, C{?}, C{#}...) is escaped so that it stays in the path.
        @param authorization: the client's header as the web layer decoded it (latin-1),
            sent back as the very bytes the client sent.
        """
        url = self._endpoint + percent_encode(path, safe="/%+")
        headers = {b"Authorization": [authorization.encode("latin-1")]}

        async def call() -> tuple[int, Any]:
            response = await self._http.get(url, headers=headers)
            body = await response.content()
            try:
                return response.code, parse_json(body)
            except ValueError:
                return response.code, None

        try:
            return await defer.ensureDeferred(call()).addTimeout(self._timeout, self._clock)
        except Exception as error:
            log.warn("index call {path} failed: {error!r}", path=path, error=error)
            raise IndexUnreachable() from None

    async def repository_images(self, repository_key: str, authorization: str) -> list | None:
        """The image ids the index lists for a repository, or None when it says no."""
        code, images = await self._get_json(f"/v1/repositories/{repository_key}/images",
                                            authorization)
        if code != 200 or not isinstance(images, list):
            return None
        if not all(isinstance(i, dict) and "id" in i for i in images):
            return None
        return [i["id"] for i in images]

    async def layer_access(self, repository_key: str, image_id: str, authorization: str) -> bool:
        """Whether the index grants access to an image of a repository."""
        code, answer = await self._get_json(
            f"/v1/repositories/{repository_key}/layer/{image_id}/access", authorization)
        return code == 200 and isinstance(answer, dict) and answer.get("access") is True


class TTLCache:
    """
    Keys remembered for a while; enough for a few thousand clients.  A TTL of 0 remembers
    nothing.
    """

    def __init__(self, clock: IReactorTime, ttl: float, limit: int = 10000) -> None:
        self._clock = clock
        self._ttl = ttl
        self._limit = limit
        self._expiry: dict[tuple, float] = {}

    def __contains__(self, key: tuple) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock.seconds():
            del self._expiry[key]
            return False
        return True

    def add(self, key: tuple, ttl: float | None = None) -> None:
        """Remember C{key} for the cache's TTL, or for C{ttl} seconds (what Redis has left)."""
        if self._ttl <= 0:
            return
        if len(self._expiry) >= self._limit:
            now = self._clock.seconds()
            self._expiry = {k: e for k, e in self._expiry.items() if e > now}
            if len(self._expiry) >= self._limit:
                self._expiry.clear()
        self._expiry[key] = self._clock.seconds() + (self._ttl if ttl is None else ttl)


class _SharedAnswers:
    """
    The index's positive answers, shared in Redis by every process and node of a registry:
    under C{<namespace><kind>:<sha256>} with the cache's TTL, the hash taken over the index
    endpoint and the answer's key (the C{Authorization} value and the repository, and the
    image for an access answer).  The namespace names the storage too, since a token's
    validation also wrote its image list there.
    """

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self._prefix = namespace(settings)
        self._endpoint = settings.index_endpoint
        self._ttl = settings.token_cache_ttl

    def _key(self, kind: str, key: tuple) -> bytes:
        material = json.dumps([self._endpoint, *key]).encode("utf-8", "surrogatepass")
        return f"{self._prefix}{kind}:{hashlib.sha256(material).hexdigest()}".encode()

    async def recall(self, kind: str, key: tuple, cache: TTLCache) -> bool:
        """Whether another process has the answer; if so C{cache} keeps it as long as Redis."""
        try:
            remaining = await self._redis.remaining(self._key(kind, key))
        except RedisUnavailable:
            return False
        if remaining is None:
            return False
        cache.add(key, remaining)
        return True

    async def remember(self, kind: str, key: tuple) -> None:
        try:
            await self._redis.set(self._key(kind, key), b"1", self._ttl)
        except RedisUnavailable:
            pass  # the other processes ask the index, as without Redis


class Authorizer:
    """
    The access rules of §5 for one registry.

    @param index: the index client; None when C{standalone} is true (no index is ever asked).
    @param redis: the C{cache} Redis, where every process shares the index's answers; None to
        keep them in this process only.
    """

    def __init__(
        self,
        settings: Settings,
        storage: IStorage,
        clock: IReactorTime,
        index: IndexClient | None,
        redis: RedisClient | None = None,
    ) -> None:
        self._storage = storage
        self._index = index
        # The image list is only read by image pushes, which a read-only registry refuses
        # (and a replica's storage may not take a write).
        self._keeps_image_lists = not settings.readonly
        self.standalone = settings.standalone
        self.token_mode = not settings.standalone and not settings.disable_token_auth
        self._tokens = TTLCache(clock, settings.token_cache_ttl)
        self._access = TTLCache(clock, settings.token_cache_ttl)
        self._shared = None
        if redis is not None and settings.token_cache_ttl > 0:
            self._shared = _SharedAnswers(redis, settings)

    async def authorize(
        self, access: Access, authorization: str | None, repository: Repository | None
    ) -> Token | None:
        """
        §5.2 for a protected route: the validated token in token mode, None in open modes.

        @param access: what the route does; a token granting something else is refused.
        @param repository: the route's repository; None on image routes.
        @raise RegistryError: 401, or 502 when the index cannot be asked.
        """
        if not self.token_mode:
            return None
        assert self._index is not None
        if not authorization or authorization.split(" ", 1)[0].lower() != "token":
            raise _unauthorized()
        pairs = token_pairs(authorization)
        if not pairs:
            raise _unauthorized()
        token_repository = pairs.get("repository")
        if repository is not None and repository.key != token_repository:
            raise _unauthorized()
        granted = pairs.get("access", "")
        if granted in _RESTRICTING and granted != access.value:
            raise _unauthorized()
        if not (
            token_repository is not None
            and token_repository.count("/") == 1
            and is_repository_key(token_repository)
        ):
            raise _unauthorized()
        key = (authorization, token_repository)
        if key not in self._tokens and not await self._recall("token", key, self._tokens):
            try:
                images = await self._index.repository_images(token_repository, authorization)
            except IndexUnreachable:
                raise _unreachable() from None
            if images is None:
                raise _unauthorized()
            if self._keeps_image_lists:
                await self._storage.put_content(
                    images_list_key(token_repository), json.dumps(images).encode()
                )
            await self._remember("token", key, self._tokens)
        return Token(token_repository, authorization)

    async def image_in_repository(self, token: Token | None, image_id: str) -> None:
        """R8 step 6, token mode only: the index must have listed the image."""
        if token is None:
            return
        try:
            images = parse_json(await self._storage.get_content(images_list_key(token.repository)))
        except (KeyNotFound, ValueError):
            images = []
        if not isinstance(images, list) or image_id not in images:
            raise RegistryError(400, "This image does not belong to the repository")

    async def check_private(self, authorization: str | None, image_id: str) -> None:
        """
        §5.4 private check (R3, R6, R9, R10): a private repository's images are served only
        when the index grants access.  404 C{Image not found} when it does not.
        """
        if self.standalone or not authorization:
            return
        key = token_pairs(authorization).get("repository")
        if key is None or not is_repository_key(key):
            return
        if not await self._storage.exists(private_flag_key_from_key(key)):
            return
        if not await self._granted(authorization, key, image_id):
            raise RegistryError(404, "Image not found")

    async def check_parent(self, authorization: str | None, parent_id: str) -> None:
        """§5.4 parent check (R8 step 8): the client must have access to the parent image."""
        if self.standalone:
            return
        key = token_pairs(authorization or "").get("repository")
        if key is None or not await self._granted(authorization or "", key, parent_id):
            raise RegistryError(400, "Image depends on an unauthorized parent")

    async def _granted(self, authorization: str, key: str, image_id: str) -> bool:
        """The access endpoint's answer, positive answers cached."""
        if authorization.split(" ", 1)[0].lower() != "token" or key.count("/") != 1:
            return False
        cache_key = (authorization, key, image_id)
        if cache_key in self._access or await self._recall("access", cache_key, self._access):
            return True
        assert self._index is not None
        try:
            granted = await self._index.layer_access(key, image_id, authorization)
        except IndexUnreachable:
            raise _unreachable() from None
        if granted:
            await self._remember("access", cache_key, self._access)
        return granted

    async def _recall(self, kind: str, key: tuple, cache: TTLCache) -> bool:
        """Whether another process has the index's answer (in Redis)."""
        return self._shared is not None and await self._shared.recall(kind, key, cache)

    async def _remember(self, kind: str, key: tuple, cache: TTLCache) -> None:
        """Keep a positive answer here, then share it (storage was written before)."""
        cache.add(key)
        if self._shared is not None:
            await self._shared.remember(kind, key)
