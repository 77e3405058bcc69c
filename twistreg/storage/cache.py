# -*- test-case-name: tests.test_cache -*-
"""
The C{cache_lru} section: a Redis cache of small keys in front of any storage driver.

Only small keys are cached (L{twistreg.layout.is_small_key}: image json, ancestry,
C{_checksum} and in-progress marker; a repository's tags, json, C{_index_images} and private
marker), and only what C{get_content} and C{exists} ask of them; and the size of layers
(L{twistreg.layout.is_layer_key}), which every image json answer carries. Every other key and
every streaming method goes straight to storage.

An entry is C{+<value>} for a stored key or C{-} for a missing one, under
C{<namespace><key>} (L{twistreg.rediscache.namespace}); a layer's size is C{+<decimal>} under
C{<namespace><key>#size}. Entries live C{cache_lru.ttl} seconds.

The rule that keeps nodes consistent:

  - A write (C{put_content}, C{remove}, C{remove_tree}, C{move}, a layer writer's C{commit})
    changes storage first, then SETs the entry unconditionally: C{+<value>}, or C{-} for a removal.
    Once the write has returned, every node reads the new entry.  When storage fails, the
    entry is deleted instead: the write may have landed or not, so the next reader asks
    storage.
  - A miss reads storage and fills the entry with SET NX: a reader that read storage before a
    write ends can never put the older value back over the writer's SET, even for a removal,
    since the writer leaves C{-} rather than nothing.  That is also why a missing key is
    cached: C{-} is as fresh as any value.

What is left is bounded by the TTL: two writers of one key whose storage and Redis updates
interleave; an entry flushed or evicted between a writer's SET and a slower reader's fill;
and a write whose Redis update failed.  For the last, the process remembers the keys (at most
L{STALE_LIMIT}) and deletes their entries before it reads Redis again.

Redis down, slow or flushed costs time, never an answer: every call falls back to storage
(L{twistreg.rediscache.RedisClient} bounds the wait and warns once a minute).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet import defer
from zope.interface import alsoProvides, implementer, providedBy

from twistreg.layout import is_layer_key, is_small_key, may_hold_small_keys
from twistreg.metrics import count
from twistreg.rediscache import RedisClient, RedisUnavailable
from twistreg.storage.interface import IStorage, IWriter, KeyNotFound

#: How many keys whose Redis update failed a process remembers; past it, their entries
#: expire with their TTL.
STALE_LIMIT = 10000

#: The metrics' counts of this cache (C{cache="redis"}).
_HITS = count("cache_hits", "redis")
_MISSES = count("cache_misses", "redis")

_PRESENT = b"+"
_ABSENT = b"-"
_SIZE = "#size"


@implementer(IStorage)
class CachedStorage:
    """
    IStorage over C{backend}, with small keys cached in Redis.

    The wrapper provides every interface C{backend} provides (L{IMaintainable}...) and hands
    their methods to it; its C{name} is the backend's.

    @param namespace: the start of every Redis key (L{twistreg.rediscache.namespace}).
    @param ttl: seconds an entry lives.
    """

    def __init__(self, backend: IStorage, redis: RedisClient, namespace: str,
                 ttl: float) -> None:
        # Set first: __getattr__ reads it, and alsoProvides looks attributes up.
        self._delegated = frozenset(
            name for interface in providedBy(backend) for name in interface.names(all=True)
        ) - frozenset(IStorage.names(all=True))
        self._backend = backend
        self._redis = redis
        self._namespace = namespace
        self._ttl = ttl
        self._stale: set[str] = set()
        self.name = backend.name
        alsoProvides(self, *providedBy(backend))

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("_delegated", ()):
            return getattr(self._backend, name)
        raise AttributeError(name)

    # -- cached ---------------------------------------------------------------------------------

    def get_content(self, key: str) -> defer.Deferred[bytes]:
        if not is_small_key(key):
            return self._backend.get_content(key)

        async def read() -> bytes:
            value = await self._lookup(key, lambda: self._stored(key))
            if value is None:
                raise KeyNotFound(key)
            return value

        return defer.ensureDeferred(read())

    def exists(self, key: str) -> defer.Deferred[bool]:
        """A small key is read whole on a miss: one storage call fills the entry."""
        if not is_small_key(key):
            return self._backend.exists(key)

        async def read() -> bool:
            return await self._lookup(key, lambda: self._stored(key)) is not None

        return defer.ensureDeferred(read())

    def size(self, key: str) -> defer.Deferred[int]:
        if not is_layer_key(key):
            return self._backend.size(key)

        async def read() -> int:
            value = await self._lookup(key + _SIZE, lambda: self._stored_size(key))
            if value is None:
                raise KeyNotFound(key)
            return int(value)

        return defer.ensureDeferred(read())

    def open_writer(self, key: str) -> defer.Deferred[Any]:
        """A layer's writer records the new size once committed."""
        if not is_layer_key(key):
            return self._backend.open_writer(key)
        return self._backend.open_writer(key).addCallback(_SizeWriter, key, self)

    def put_content(self, key: str, data: bytes) -> defer.Deferred[None]:
        if not is_small_key(key):
            return self._backend.put_content(key, data)
        return defer.ensureDeferred(
            self._write({key: _PRESENT + data}, lambda: self._backend.put_content(key, data)))

    def remove(self, key: str) -> defer.Deferred[None]:
        cached = _entry_key(key)
        if cached is None:
            return self._backend.remove(key)
        return defer.ensureDeferred(
            self._write({cached: _ABSENT}, lambda: self._backend.remove(key)))

    def remove_tree(self, key: str) -> defer.Deferred[None]:
        """The small keys below C{key} are listed first, to leave C{-} in their entries."""

        async def remove() -> None:
            keys = await self._small_keys_under(key) if may_hold_small_keys(key) else []
            await self._write(dict.fromkeys(keys, _ABSENT),
                              lambda: self._backend.remove_tree(key))

        return defer.ensureDeferred(remove())

    def move(self, source: str, destination: str) -> defer.Deferred[None]:
        """
        A write of both keys: C{-} for the source, the moved value (or size) for the
        destination, read from the source before it moves since storage cannot say it after.
        """
        source_entry, destination_entry = _entry_key(source), _entry_key(destination)
        if source_entry is None and destination_entry is None:
            return self._backend.move(source, destination)

        async def move() -> None:
            entries: dict[str, bytes] = {}
            if source_entry is not None:
                entries[source_entry] = _ABSENT
            if destination_entry is not None:
                if is_small_key(destination):
                    value = await self._backend.get_content(source)
                else:
                    value = b"%d" % await self._backend.size(source)
                entries[destination_entry] = _PRESENT + value
            await self._write(entries, lambda: self._backend.move(source, destination))

        return defer.ensureDeferred(move())

    # -- straight to storage --------------------------------------------------------------------

    def list_directory(self, key: str) -> defer.Deferred[list[str]]:
        return self._backend.list_directory(key)

    def modified(self, key: str) -> defer.Deferred[float]:
        return self._backend.modified(key)

    def stream(self, key: str, consumer: Any, offset: int, length: int) -> defer.Deferred[None]:
        return self._backend.stream(key, consumer, offset, length)

    def open_file(self, key: str) -> defer.Deferred[Any]:
        return self._backend.open_file(key)

    # -- the rule -------------------------------------------------------------------------------

    def _redis_key(self, key: str) -> bytes:
        return (self._namespace + key).encode("utf-8", "surrogatepass")

    async def _lookup(self, key: str,
                      read: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        """The entry C{key}, None when missing: from Redis, else C{read} from storage."""
        redis_key = self._redis_key(key)
        try:
            await self._forget_stale()
            cached = await self._redis.get(redis_key)
        except RedisUnavailable:
            _MISSES.inc()
            return await read()
        if cached == _ABSENT:
            _HITS.inc()
            return None
        if cached is not None and cached.startswith(_PRESENT):
            _HITS.inc()
            return cached[len(_PRESENT):]
        _MISSES.inc()
        value = await read()
        try:
            await self._redis.set(redis_key, _ABSENT if value is None else _PRESENT + value,
                                  self._ttl, only_if_absent=True)
        except RedisUnavailable:
            pass  # a fill that did not happen leaves nothing stale
        return value

    async def _stored(self, key: str) -> bytes | None:
        try:
            return await self._backend.get_content(key)
        except KeyNotFound:
            return None

    async def _stored_size(self, key: str) -> bytes | None:
        try:
            return b"%d" % await self._backend.size(key)
        except KeyNotFound:
            return None

    async def layer_committed(self, key: str, size: int,
                              commit: Callable[[], Awaitable[None]]) -> None:
        """A layer writer's commit, then the layer's new size in its entry."""
        await self._write({key + _SIZE: _PRESENT + b"%d" % size}, commit)

    async def _write(self, entries: Mapping[str, bytes],
                     write: Callable[[], Awaitable[None]]) -> None:
        """Storage first, then C{entries} (entry key: entry); deleted when storage fails."""
        try:
            await write()
        except BaseException:
            await self._update(dict.fromkeys(entries))
            raise
        await self._update(entries)

    async def _update(self, entries: Mapping[str, bytes | None]) -> None:
        """SET each entry (None: DEL), or remember their keys when Redis fails."""
        try:
            await self._forget_stale()
            await self._redis.delete(
                [self._redis_key(key) for key, entry in entries.items() if entry is None])
            for key, entry in entries.items():
                if entry is not None:
                    await self._redis.set(self._redis_key(key), entry, self._ttl)
        except RedisUnavailable:
            keys = list(entries)
            self._stale.update(keys[: max(0, STALE_LIMIT - len(self._stale))])

    async def _forget_stale(self) -> None:
        """
        Delete the entries whose update failed, before Redis is read or written again.

        @raise RedisUnavailable: they are still there; Redis must not be read.
        """
        if self._stale:
            keys = list(self._stale)
            await self._redis.delete([self._redis_key(key) for key in keys])
            self._stale.difference_update(keys)

    async def _small_keys_under(self, directory: str) -> list[str]:
        keys = []
        for name in await self._backend.list_directory(directory):
            key = f"{directory}/{name}"
            if is_small_key(key):
                keys.append(key)
            elif may_hold_small_keys(key):
                keys.extend(await self._small_keys_under(key))
        return keys


def _entry_key(key: str) -> str | None:
    """The entry a write of C{key} changes: its own, its size's, or none."""
    if is_small_key(key):
        return key
    if is_layer_key(key):
        return key + _SIZE
    return None


@implementer(IWriter)
class _SizeWriter:
    """A layer's writer that, once committed, puts the layer's size in its cache entry."""

    def __init__(self, writer: IWriter, key: str, cache: CachedStorage) -> None:
        self._writer = writer
        self._key = key
        self._cache = cache
        self._size = 0

    def write(self, data: bytes) -> defer.Deferred[None] | None:
        self._size += len(data)
        return self._writer.write(data)

    def commit(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._cache.layer_committed(
            self._key, self._size, lambda: defer.maybeDeferred(self._writer.commit)))

    def abort(self) -> None:
        self._writer.abort()

