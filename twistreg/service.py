# -*- test-case-name: tests.test_service,tests.test_plugin,tests.test_pool -*-
"""
The services that serve a registry: what the plugin, the system service and embedding
applications start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from treq.client import HTTPClient
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site
from zope.interface import implementer

from twistreg.bridge.tagspace import TagSpace
from twistreg.bridge.v1_to_v2 import V1View
from twistreg.bridge.v2_to_v1 import V2View
from twistreg.config import (
    ConfigError,
    Settings,
    find_application,
    load_settings,
    require_supported_storage,
)
from twistreg.gc.schedule import Collector
from twistreg.metrics import PoolMetrics, RequestTally, start_flushing
from twistreg.metrics import flush as flush_metrics
from twistreg.oci.repositories import Repositories
from twistreg.oci.uploads import Uploads
from twistreg.rediscache import RedisClient, namespace
from twistreg.registry.auth import Authorizer, IndexClient
from twistreg.registry.images import Images
from twistreg.registry.index import Index
from twistreg.registry.mirror import Mirror
from twistreg.registry.rules import Registry
from twistreg.registry.search import SearchIndex, open_search_index, walk
from twistreg.registry.tags import Tags
from twistreg.server.arbiter import PoolConfig, PreforkService
from twistreg.server.interfaces import IWorkerApplication
from twistreg.server.logfiles import ReopenableStream
from twistreg.storage import open_storage
from twistreg.storage.cache import CachedStorage
from twistreg.storage.interface import IMaintainable, IStaleUploads, IStorage
from twistreg.web.scrape import MetricsOnly
from twistreg.web.site import RegistrySite
from twistreg.web.wsgi import WSGI_APPLICATION, WSGIContainer, load_wsgi_application

log = Logger()

# How often what dead writers left behind is looked for (S3 keeps a day's grace itself).
PURGE_INTERVAL = 3600.0


def build_registry(settings: Settings, reactor) -> Registry:
    """
    The registry's rules over the storage C{settings} name: no global state, so two
    registries in one process do not meet.  Its Redis connections (C{cache_lru}, C{cache})
    are made here, in the process that serves (a worker, never the master), and closed at
    reactor shutdown.

    @raise ConfigError: the settings name a storage driver or search database that cannot
        be used.
    """
    require_supported_storage(settings)
    storage = open_storage(settings, reactor)
    redis: list[RedisClient] = []
    if settings.cache_lru is not None:
        lru = RedisClient(settings.cache_lru, reactor, purpose="cache_lru")
        redis.append(lru)
        storage = CachedStorage(storage, lru, namespace(settings), settings.cache_lru.ttl)
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor)))
    index_client = None
    shared = None
    if not settings.standalone:
        index_client = IndexClient(settings.index_endpoint, http, reactor, settings.index_timeout)
        if settings.cache is not None:
            shared = RedisClient(settings.cache, reactor, purpose="cache")
            redis.append(shared)
    auth = Authorizer(settings, storage, reactor, index_client, shared)
    mirror = None
    if settings.mirroring_source:
        mirror = Mirror(settings.mirroring_source, settings.mirroring_source_index, http,
                        reactor, storage, settings.mirroring_timeout)
    search = open_search_index(settings, reactor)
    if not settings.v2:
        return Registry(settings=settings, storage=storage, auth=auth,
                        images=Images(storage, reactor, auth), tags=Tags(storage, reactor, search),
                        index=Index(storage, search), clock=reactor, mirror=mirror, search=search,
                        redis=tuple(redis))
    # One tag namespace for both protocols, and each served what the other pushed.
    tag_space = TagSpace(storage)
    repositories = Repositories(storage, before_tag=tag_space.take_from_v1)
    tags = Tags(storage, reactor, search, before_tag=tag_space.take_from_v2)
    return Registry(
        settings=settings, storage=storage, auth=auth, images=Images(storage, reactor, auth),
        tags=tags, index=Index(storage, search), clock=reactor, mirror=mirror, search=search,
        repositories=repositories, uploads=Uploads(storage, reactor), tag_space=tag_space,
        v1_view=V1View(storage, reactor, tags, repositories),
        v2_view=V2View(storage, reactor, repositories, settings.bridge_platform),
        redis=tuple(redis),
    )


def build_site(settings: Settings, reactor, access_log: IO[str] | ReopenableStream | None, *,
               multiprocess: bool) -> RegistrySite:
    """
    The Site one process serves: the registry, the WSGI application of C{server.wsgi}, or
    both (C{server.wsgi_mount}).

    @param multiprocess: whether other processes serve it too (a worker of the pool).
    @raise ConfigError: the WSGI application cannot be loaded, or the registry cannot be
        built (see L{build_registry}).
    """
    server = settings.server
    wsgi = None
    if server.wsgi is not None:
        wsgi = WSGIContainer(reactor, load_wsgi_application(server.wsgi), threads=server.threads,
                             trusted_proxies=server.trusted_proxies, multiprocess=multiprocess)
    registry = build_registry(settings, reactor) if server.serves_registry else None
    return RegistrySite(registry, access_log, wsgi=wsgi, wsgi_mount=server.wsgi_mount,
                        metrics=count_requests(settings, reactor), reactor=reactor)


def count_requests(settings: Settings, reactor) -> RequestTally | None:
    """
    When metrics are on, what counts a Site's requests, flushed into the metrics every
    second and once more as the reactor stops (after a worker's drain).
    """
    if not settings.metrics.enabled:
        return None
    tally = RequestTally()
    flushing = start_flushing(reactor)
    reactor.addSystemEventTrigger("during", "shutdown", flushing.stop)
    reactor.addSystemEventTrigger("during", "shutdown", flush_metrics)
    return tally


def listen_for_metrics(settings: Settings, reactor,
                       directory: str | None = None) -> defer.Deferred | None:
    """
    Serve the metrics page alone on C{metrics.listen}, when set (and metrics are on): what
    the single process or a pool's master does, so that one process answers there.

    @param directory: the pool's metrics directory (the master), else this process's.
    @return: the listening port's Deferred, or None.
    """
    metrics = settings.metrics
    if not metrics.enabled or metrics.listen is None:
        return None
    site = Site(MetricsOnly(metrics.path, directory))
    site.noisy = False
    endpoint = parse_endpoint(reactor, metrics.listen)

    def listening(port: IListeningPort) -> IListeningPort:
        log.info("metrics served at {path} on {address}", path=metrics.path,
                 address=describe_address(port.getHost()))
        return port

    return endpoint.listen(site).addCallback(listening)


def open_access_log(target: str | None) -> IO[str] | ReopenableStream | None:
    """
    The access log stream: C{-} is stdout, a path is appended to (by every worker of a
    pool, one line per write; SIGUSR1 reopens it), None is no log.

    @raise ConfigError: the file cannot be opened for appending (one line naming it).
    """
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    try:
        return ReopenableStream(target)
    except OSError as error:
        raise ConfigError(f"cannot open the access log {target}: {error.strerror}") from None


# -- the checks at start and reload ----------------------------------------------------------------


def check_storage(settings: Settings, reactor) -> IStorage:
    """
    The storage the settings name, once proven usable: a driver this version has, and (for
    drivers that say how, L{IMaintainable}) a place a push can write to.

    @raise ConfigError: one line naming the storage and the problem.
    """
    require_supported_storage(settings)
    storage = open_storage(settings, reactor)
    # A read-only registry may serve storage it cannot write (a replica's).
    if IMaintainable.providedBy(storage) and not settings.readonly:
        storage.check_writable()
    return storage


def check_settings(settings: Settings, reactor) -> None:
    """
    What a start and a reload check in the master, before any worker is started: what
    would otherwise fail in every worker (a storage driver it lacks, a WSGI module that is
    not there, an access log it cannot open), or answer 500 to every push (a read-only
    storage). The WSGI application is only looked for, not imported: the master never runs it.

    @raise ConfigError: one line saying what cannot be used, and why.
    """
    server = settings.server
    if server.serves_registry:
        check_storage(settings, reactor)
    if server.wsgi is not None:
        find_application(server.wsgi, WSGI_APPLICATION)
    access_log = open_access_log(server.access_log)
    if isinstance(access_log, ReopenableStream):
        access_log.close()


class RegistryService(service.Service):
    """
    Serves the registry (and the WSGI application of C{server.wsgi}, if any) in this process
    on every endpoint of the settings.

    @param reactor: the reactor to listen with (an embedding application's own).
    @param on_fatal: called with the error when the registry cannot run after all (a search
        database of an unknown version); by default it is logged.
    @param on_ready: called with a status once every endpoint listens.
    @ivar ports: the listening ports, once started.
    """

    def __init__(
        self,
        settings: Settings,
        reactor,
        on_fatal: Callable[[Exception], object] | None = None,
        on_ready: Callable[[str], object] = lambda status: None,
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self.site = build_site(settings, reactor, open_access_log(settings.server.access_log),
                               multiprocess=False)
        self.registry = self.site.registry
        self.ports: list[IListeningPort] = []
        self._janitor: task.LoopingCall | None = None
        self._collector: Collector | None = None
        self._endpoints = [parse_endpoint(reactor, d) for d in settings.server.endpoints()]

    def startService(self) -> None:
        """
        Listen on every endpoint, then sweep what crashed uploads left behind.

        @raise Exception: why an endpoint cannot listen (TCP, UNIX and TLS endpoints listen
            at once, so this is raised here and no port stays open).
        """
        super().startService()
        failures: list[Failure] = []
        for endpoint in self._endpoints:
            endpoint.listen(self.site).addCallbacks(self._listening, failures.append)
        metrics = listen_for_metrics(self.settings, self._reactor)
        if metrics is not None:
            metrics.addCallbacks(self.ports.append, failures.append)
        if failures:
            self.stopService()
            failures[0].raiseException()
        if self.site.wsgi is not None:
            self.site.wsgi.start()
        if self.registry is not None:
            self._janitor = start_registry(self.registry, self._reactor, self._on_fatal)
            self._collector = Collector(self._reactor, self.registry.storage, self.settings)
            self._collector.start()
        self._on_ready("serving")

    def _listening(self, port: IListeningPort) -> None:
        self.ports.append(port)
        _log_serving(self.settings, describe_address(port.getHost()))

    def stopService(self) -> defer.Deferred:
        """Stop listening; in-flight requests are left to finish, but WSGI ones are cut."""
        if self._janitor is not None and self._janitor.running:
            self._janitor.stop()
        if self._collector is not None:
            self._collector.stop()
        if self.running:
            super().stopService()
        if self.site.wsgi is not None:
            self.site.wsgi.stop()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def start_registry(
    registry: Registry, reactor, on_fatal: Callable[[Exception], object] | None = None
) -> task.LoopingCall:
    """
    A registry's background work at start: open its search, and purge what writers that
    died left behind, now and every hour.

    @return: the hourly purge; stop it when the registry stops.
    """
    start_search(registry.search, registry.storage, reactor, on_fatal)
    return purge_uploads_hourly(reactor, registry.storage, registry.settings)


def start_search(
    search: SearchIndex | None, storage: IStorage, clock,
    on_fatal: Callable[[Exception], object] | None = None,
) -> None:
    """
    Open the search index, if any; a new one is filled from the storage tree in the
    background, once however many processes start together (L{SearchIndex.open} decides
    which one fills it).

    @param on_fatal: called with the L{ConfigError} of a database this version cannot use.
    """
    if search is None:
        return

    async def open_and_fill() -> None:
        if await search.open():
            count = await search.populate(await walk(storage, clock))
            log.info("search index created with {count} repositories", count=count)

    def failed(failure: Failure) -> None:
        if failure.check(ConfigError) and on_fatal is not None:
            on_fatal(failure.value)
        else:
            log.failure("opening the search index failed", failure)

    defer.ensureDeferred(open_and_fill()).addErrback(failed)


def purge_uploads_hourly(reactor, storage: IStorage, settings: Settings,
                         readonly: Callable[[], bool] | None = None) -> task.LoopingCall:
    """
    Remove what uploads of dead writers left (storage that has any), and V2 upload sessions
    older than C{v2_upload_max_age}, now and every hour: a node of a cluster may die
    mid-push at any time, its S3 multipart upload stays, and a client may never finish.
    Not while the registry is read-only: its storage may be a replica's, or under
    maintenance.

    @param readonly: whether the registry is read-only now (a reload may change it);
        by default, what C{settings} say.
    @return: the running job; stop it when the registry stops.
    """
    sessions = Uploads(storage, reactor) if settings.v2 else None
    is_readonly = readonly if readonly is not None else (lambda: settings.readonly)

    def failed(failure: Failure) -> None:
        log.warn("purging stale uploads failed: {why}", why=failure.getErrorMessage())

    def purge() -> defer.Deferred | None:
        if is_readonly():
            return None
        work = []
        if IStaleUploads.providedBy(storage):
            work.append(storage.purge_stale_uploads().addCallbacks(
                lambda count: count and log.info("removed {count} stale uploads", count=count),
                failed))
        if sessions is not None:
            work.append(defer.ensureDeferred(
                sessions.purge_stale(settings.v2_upload_max_age)).addErrback(failed))
        return defer.gatherResults(work) if work else None

    job = task.LoopingCall(purge)
    job.clock = reactor
    job.start(PURGE_INTERVAL)
    return job


def _log_serving(settings: Settings, address: str) -> None:
    server = settings.server
    if server.serves_registry:
        log.info(
            "twistreg serving {storage} storage {path} on {address}",
            storage=settings.storage,
            path=settings.storage_path,
            address=address,
        )
    if server.wsgi is not None:
        log.info("twistreg serving WSGI application {wsgi} at {mount} on {address}",
                 wsgi=server.wsgi, mount=server.wsgi_mount, address=address)


def parse_endpoint(reactor, description: str) -> IStreamServerEndpoint:
    """A server endpoint from its string, or the one-line configuration error."""
    try:
        return serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"invalid listen endpoint {description!r}: {error}") from None


def describe_address(address) -> str:
    """C{host:port} for IP addresses, the path for UNIX sockets."""
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{address.port}"
    name = getattr(address, "name", address)
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


# -- the process pool ----------------------------------------------------------------------------

WORKER_APPLICATION = "twistreg.service:worker_application"
MIB = 1 << 20


@implementer(IWorkerApplication)
class RegistryApplication:
    """What a worker of the pool serves: the registry's Site and its access log."""

    def __init__(self, settings: Settings, reactor) -> None:
        self.settings = settings
        self._access_log = open_access_log(settings.server.access_log)
        self.site = build_site(settings, reactor, self._access_log, multiprocess=True)
        self.registry = self.site.registry
        if self.site.wsgi is not None:
            self.site.wsgi.start()
            # "during": after the worker's drain ("before"), so in-flight requests finished.
            reactor.addSystemEventTrigger("during", "shutdown", self.site.wsgi.stop)

    def reopen_logs(self) -> None:
        if isinstance(self._access_log, ReopenableStream):
            self._access_log.reopen()


def worker_application(reactor, options: Mapping[str, Any]) -> RegistryApplication:
    """
    Run in each worker: read the configuration as the master did (same file, flavor,
    command-line values and environment) and build the registry.
    """
    settings = load_settings(options.get("config"), options.get("flavor"),
                             _overrides(options.get("overrides")))
    return RegistryApplication(settings, reactor)


def _overrides(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Command-line values back from JSON (where tuples became lists)."""
    overrides = {key: value for key, value in (given or {}).items() if value is not None}
    listen = overrides.get("server.listen")
    if listen is not None:
        overrides["server.listen"] = (listen,) if isinstance(listen, str) else tuple(listen)
    return overrides


def worker_count(settings: Settings) -> int:
    """C{server.workers}, where unset means one per CPU."""
    workers = settings.server.workers
    return (os.cpu_count() or 1) if workers is None else workers


class PreforkRegistryService(PreforkService):
    """
    The registry served by a pool of worker processes (C{workers} >= 1); the master sweeps
    stale upload files once, and re-reads (and checks) the configuration on HUP.

    @param sources: where the settings came from, as given to L{load_settings}: C{config}
        (the file, or C{None}), C{flavor} and C{overrides} (the command line's values). The
        workers and a reload read the configuration again from them.
    @param worker_logs: C{log_format} (text or json), C{log_level} and C{log_file} (C{None}
        is standard output) for the workers, as the master logs.
    @param argv: the command line the workers present as theirs.
    """

    def __init__(
        self,
        settings: Settings,
        reactor,
        *,
        sources: Mapping[str, Any],
        worker_logs: Mapping[str, Any] | None = None,
        argv: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self._search = None
        self._janitor: task.LoopingCall | None = None
        self._collector: Collector | None = None
        self.metrics: PoolMetrics | None = None
        self._metrics_port: IListeningPort | None = None
        if settings.server.serves_registry:
            require_supported_storage(settings)
            # The master creates (and fills) a new search index once, before workers use it.
            self._search = open_search_index(settings, reactor)
        overrides = _overrides(sources.get("overrides"))
        self._sources = {
            "config": sources.get("config"),
            "flavor": sources.get("flavor"),
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        }
        self._worker_logs = dict(worker_logs or {})
        self._argv = tuple(argv)
        try:
            super().__init__(
                reactor,
                settings.server.endpoints(),
                self._pool_config(settings),
                reload_config=self._reload,
                on_serving=lambda address: _log_serving(self.settings, address),
                on_worker_event=self._worker_event,
                **kwargs,
            )
        except ValueError as error:
            raise ConfigError(f"invalid listen endpoint {error}") from None

    def _pool_config(self, settings: Settings) -> PoolConfig:
        server = settings.server
        return PoolConfig(
            app=WORKER_APPLICATION,
            app_options=self._sources,
            workers=max(1, worker_count(settings)),
            timeout=server.timeout,
            graceful_timeout=server.graceful_timeout,
            max_requests=server.max_requests,
            max_requests_jitter=server.max_requests_jitter,
            max_memory=server.max_worker_memory * MIB,
            worker_header=settings.debug,
            argv=self._argv,
            log_level=self._worker_logs.get("log_level", settings.loglevel),
            log_format=self._worker_logs.get("log_format", "text"),
            log_file=self._worker_logs.get("log_file"),
        )

    def _reload(self) -> PoolConfig:
        """
        HUP: the configuration again, checked as at start before any new worker is started.
        Listeners stay those bound at start.

        @raise ConfigError: the new configuration cannot be used; the pool serves on.
        """
        settings = load_settings(self._sources["config"], self._sources["flavor"],
                                 _overrides(self._sources["overrides"]))
        check_settings(settings, self._reactor)
        if settings.server.endpoints() != self.settings.server.endpoints():
            log.warn("reload: the listen endpoints changed; restart the server to apply that")
        if worker_count(settings) == 0:
            log.warn("reload: workers 0 needs a restart; keeping one worker meanwhile")
        before, after = self.settings.metrics, settings.metrics
        if (before.enabled, before.listen) != (after.enabled, after.listen):
            log.warn("reload: metrics.enabled or metrics.listen changed; restart the server"
                     " to apply that")
        self.settings = settings
        return self._pool_config(settings)

    def startService(self) -> None:
        """The metrics directory (and endpoint) first: the workers inherit the directory."""
        self._start_metrics()
        try:
            super().startService()
        except Exception:
            self._stop_metrics()
            raise
        if not self.settings.server.serves_registry:
            return
        # Once, here: workers come and go, and a purge in each would race with the others.
        storage = open_storage(self.settings, self._reactor)
        self._janitor = purge_uploads_hourly(self._reactor, storage, self.settings,
                                             lambda: self.settings.readonly)
        self._collector = Collector(self._reactor, storage, self.settings,
                                    lambda: self.settings.readonly)
        self._collector.start()
        start_search(self._search, storage, self._reactor, self._fatal)

    def stopService(self) -> defer.Deferred[None]:
        if self._janitor is not None and self._janitor.running:
            self._janitor.stop()
        if self._collector is not None:
            self._collector.stop()
        stopped = super().stopService()
        if self._search is not None:
            self._search.close()
        # Once the workers are gone: they write to the directory until they end.
        return stopped.addBoth(lambda result: (self._stop_metrics(), result)[1])

    def _start_metrics(self) -> None:
        """
        With metrics on: a fresh directory for every process's values (beside the pid file,
        else in the temporary directory), and the metrics endpoint, served here.
        """
        if not self.settings.metrics.enabled:
            return
        pidfile = self.settings.server.pidfile
        self.metrics = PoolMetrics(os.path.dirname(os.path.abspath(pidfile)) if pidfile else None)
        failures: list[Failure] = []
        listening = listen_for_metrics(self.settings, self._reactor, self.metrics.directory)
        if listening is not None:
            listening.addCallbacks(self._metrics_listening, failures.append)
        if failures:
            self._stop_metrics()
            failures[0].raiseException()

    def _metrics_listening(self, port: IListeningPort) -> None:
        self._metrics_port = port

    def _stop_metrics(self) -> None:
        if self._metrics_port is not None:
            self._metrics_port.stopListening()
            self._metrics_port = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def _worker_event(self, kind: str, pid: int | None) -> None:
        if self.metrics is not None:
            self.metrics.worker_event(kind, pid)


def make_service(
    settings: Settings,
    reactor,
    *,
    overrides: Mapping[str, Any] | None = None,
    on_fatal: Callable[[Exception], object] | None = None,
    on_ready: Callable[[str], object] = lambda status: None,
    on_reloading: Callable[[], object] = lambda: None,
    worker_logs: Mapping[str, Any] | None = None,
    argv: Sequence[str] = (),
) -> service.Service:
    """
    The service that serves C{settings}, checked first (L{check_settings}): in this process
    when C{server.workers} is 0 (L{RegistryService}), else by a pool of worker processes
    (L{PreforkRegistryService}) that read the same configuration. What C{twist twistreg}
    and embedding applications start.

    @param overrides: the command line's values, as given to L{load_settings}; the workers
        and a reload read the configuration again with them.
    @param on_fatal: called with the error when the registry cannot run after all (workers
        that cannot load it, a search database of an unknown version).
    @param on_ready: called with a status (for systemd's C{STATUS=}) when serving begins and,
        with a pool, after every reload, whether it succeeded or was abandoned.
    @param on_reloading: called when a reload (HUP) begins (a pool only).
    @param worker_logs: see L{PreforkRegistryService}.
    @param argv: the command line the workers present as theirs.
    @raise ConfigError: the settings cannot be served (one line).
    """
    check_settings(settings, reactor)
    if worker_count(settings) == 0:
        return RegistryService(settings, reactor, on_fatal=on_fatal, on_ready=on_ready)
    return PreforkRegistryService(
        settings,
        reactor,
        sources={"config": settings.config_path, "flavor": settings.flavor,
                 "overrides": dict(overrides or {})},
        worker_logs=worker_logs,
        argv=argv,
        on_fatal=on_fatal,
        on_ready=lambda generation: on_ready(f"serving (worker generation {generation})"),
        on_reloading=on_reloading,
    )
