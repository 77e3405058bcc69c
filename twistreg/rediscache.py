# -*- test-case-name: tests.test_cache -*-
"""
The Redis connection of the caches (the C{cache} and C{cache_lru} sections), and the names
of what twistreg keeps in Redis.

A cache must only ever make the registry slower, never stop it (docs/storage.md, "Redis
caches"): every call here fails with L{RedisUnavailable} within C{timeout} seconds when Redis
is down, slow or refuses the command, and the caller answers without Redis.  Once a call has
failed, calls fail at once while no connection is open, so an outage costs a request
nothing; txredisapi's pool keeps reconnecting, and calls go to Redis again as soon as a
connection is back.  An outage is logged at most once a minute.

The pool is made where it is used: in each worker (L{twistreg.service.build_registry}),
never in the master before it forks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from twistreg.config import RedisSettings, Settings
from twistreg.logs import Occasional

log = Logger()

#: Seconds a call may take, waiting for a connection included, before the caller goes on
#: without Redis.
DEFAULT_TIMEOUT = 0.5

#: Seconds between two warnings about one Redis that does not answer.
WARNING_INTERVAL = 60.0

# Connections per process: commands are pipelined, so one serves every request of a worker
# (Redis runs one command at a time anyway), and an outage logs one reconnection attempt at
# a time (twisted's ClientService logs each at info level).
_POOL_SIZE = 1
# txredisapi backs off up to 10 s between connection attempts; a cache that is back should
# be used again soon, and an attempt costs next to nothing.
_RECONNECT_MAX_DELAY = 5.0
_CONNECT_TIMEOUT = 2.0


class RedisUnavailable(Exception):
    """Redis did not answer in time, is not connected, or refused the command."""


def namespace(settings: Settings) -> str:
    """
    The start of every Redis key of the registry that C{settings} describe, so that
    registries on other storage can share one Redis database: C{twistreg:s3:<bucket>/<prefix>:}
    for S3, C{twistreg:local:<host name>:<storage path>:} for local storage (a local tree
    belongs to one machine: two machines with the same path must not share entries).
    """
    if settings.storage == "s3" and settings.s3 is not None:
        location = f"{settings.s3.bucket}/{settings.s3.prefix}"
    else:
        location = f"{socket.gethostname()}:{os.path.abspath(settings.storage_path)}"
    return f"twistreg:{settings.storage}:{location}:"


def _endpoint(reactor: Any, host: str, port: int) -> IStreamClientEndpoint:
    """An address needs no resolver (whose thread pool runs only with the reactor)."""
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=_CONNECT_TIMEOUT)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=_CONNECT_TIMEOUT)
    return HostnameEndpoint(reactor, host, port, timeout=_CONNECT_TIMEOUT)


class RedisClient:
    """
    A lazy pool of connections to one Redis, whose calls answer or fail within C{timeout}.

    The pool reconnects by itself; L{close} (also run at reactor shutdown) disconnects it.

    @param purpose: what the Redis is for (C{cache}, C{cache_lru}), named in the warnings.
    @param reactor: connects, and times the calls and the warnings.
    """

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        purpose: str,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._clock = reactor
        self._timeout = timeout
        self.purpose = purpose
        self._target = f"{purpose} {settings.host}:{settings.port}/{settings.db}"
        self._settings = settings
        self._started = 0.0
        self._factory = self._connect()
        self._failing = False
        self._warnings = Occasional(reactor, WARNING_INTERVAL)
        self._closed: defer.Deferred[None] | None = None
        self._shutdown: Any = reactor.addSystemEventTrigger(
            "during", "shutdown", self._disconnect)

    def _connect(self) -> txredisapi.RedisFactory:
        """
        A new pool, connecting.  SELECT is sent even for db 0, so that a Redis that accepts
        connections but does not answer is found out before a request is given one.
        """
        settings = self._settings
        # charset None: values are bytes as stored; convertNumbers off: "123" stays b"123".
        factory = txredisapi.RedisFactory(
            f"{settings.host}:{settings.port}", settings.db, _POOL_SIZE, isLazy=True,
            charset=None, password=settings.password, replyTimeout=self._timeout,
            convertNumbers=False,
        )
        factory.maxDelay = _RECONNECT_MAX_DELAY
        # Fails when a first connection is refused: the calls' warning says so already.
        factory.deferred.addErrback(lambda failure: None)
        factory.startConnecting(_endpoint(self._clock, settings.host, settings.port))
        self._started = self._clock.seconds()
        return factory

    async def ping(self) -> None:
        """Whether Redis answers (C{/_health}): raises L{RedisUnavailable} when it does not."""
        await self._call(b"PING")

    async def get(self, key: bytes) -> bytes | None:
        """The value of C{key}, or None when Redis has none."""
        return await self._call(b"GET", key)

    async def set(
        self, key: bytes, value: bytes, ttl: float, *, only_if_absent: bool = False
    ) -> bool:
        """
        Store C{value} under C{key} for C{ttl} seconds (at least a millisecond).

        @param only_if_absent: leave a value already there alone (C{NX}).
        @return: whether the value was stored.
        """
        args = [key, value, b"PX", b"%d" % max(1, round(ttl * 1000))]
        if only_if_absent:
            args.append(b"NX")
        return await self._call(b"SET", *args) is not None

    async def remaining(self, key: bytes) -> float | None:
        """The seconds C{key} has left to live, or None when it is not there."""
        milliseconds = await self._call(b"PTTL", key)
        # -2: not there; -1: no expiry, which twistreg never sets: not to be trusted.
        return None if milliseconds < 0 else milliseconds / 1000

    async def delete(self, keys: Sequence[bytes]) -> None:
        """Remove C{keys} (missing ones are no error)."""
        if keys:
            await self._call(b"DEL", *keys)

    def close(self) -> defer.Deferred[None]:
        """
        Close the connections and stop reconnecting; safe to call twice.

        @return: fires once the connections are closed (at once on a second call).
        """
        if self._shutdown is not None:
            self._clock.removeSystemEventTrigger(self._shutdown)
        return self._disconnect()

    def _disconnect(self) -> defer.Deferred[None]:
        self._shutdown = None  # fired or removed: the trigger list no longer holds it
        if self._closed is not None:
            return defer.succeed(None)
        self._closed = self._factory.disconnect().addCallback(lambda _: None)
        return self._closed

    async def _call(self, *command: bytes) -> Any:
        if self._closed is not None:
            raise RedisUnavailable("closed")
        if self._factory.stopped and self._clock.seconds() - self._started >= _RECONNECT_MAX_DELAY:
            # txredisapi stops for good when AUTH or SELECT fail on a new connection (a Redis
            # that stalled, or is still loading): start a new pool, as often as it would retry.
            self._factory.disconnect()
            self._factory = self._connect()
        if self._failing and not self._factory.size:
            # Failed before and still no connection: waiting would only cost time.
            self._failed("not connected")
        call = self._factory.handler.execute_command(*command)
        try:
            result = await call.addTimeout(self._timeout, self._clock)
        except Exception as error:
            if isinstance(error, defer.TimeoutError):
                self._failed(f"no answer within {self._timeout} s")
            self._failed(repr(error))
        if self._failing:
            self._failing = False
            log.info("Redis {target} answers again", target=self._target)
        return result

    def _failed(self, why: str) -> None:
        """Warn, at most once every L{WARNING_INTERVAL} seconds, and raise."""
        self._failing = True
        self._warnings.warn(log, "Redis {target} unavailable ({why}); answering without it",
                            target=self._target, why=why)
        raise RedisUnavailable(why)
