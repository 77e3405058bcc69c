# -*- test-case-name: tests.test_metrics -*-
"""
The registry's Prometheus metrics (docs/operations.md, "Metrics and health"), summed over every
process of a node by prometheus_client's multiprocess mode.

A metric value in that mode is a write to a memory-mapped file under a lock, about a
microsecond each; a request touches five of them, which would cost more than the 5 % of a
C{_ping} that metrics may take. So the hot paths only add to plain numbers kept in this process
(L{RequestTally}, L{Count}), and L{flush} adds them to the shared values every
L{FLUSH_INTERVAL} seconds and before a page is rendered: the page a process renders is exact
for itself, at most a flush interval behind for its peers.

prometheus_client picks how values are kept when it is imported: shared files when
C{PROMETHEUS_MULTIPROC_DIR} is set (a worker of the pool: the master sets it in their
environment), plain numbers otherwise (a single process, an embedding application). The
master's own counts (L{PoolMetrics}) go to the directory it made, whatever it imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from bisect import bisect_left
from time import monotonic
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.internet import task

#: Seconds between two flushes of a process's counts into the shared values.
FLUSH_INTERVAL = 1.0
#: The request latency buckets, in seconds: a C{_ping} is well under a millisecond, a layer
#: transfer may take minutes.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: The method label: these, or C{other} (a client may send any token).
METHODS = {m.encode("ascii"): m for m in (
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")}
#: The route family of a request no route matched.
NO_ROUTE = "none"
#: The environment variable that tells prometheus_client where the shared files are.
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Metrics:
    """The metrics a serving process writes, made on first use (see L{metrics})."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "twistreg_http_requests", "Requests answered, by route family, method and status.",
            ["route", "method", "status"], registry=r)
        self.duration = Histogram(
            "twistreg_http_request_duration_seconds",
            "Seconds from the request line to the end of the answer, by route family and method.",
            ["route", "method"], buckets=DURATION_BUCKETS, registry=r)
        self.received = Counter(
            "twistreg_http_request_bytes", "Request body bytes received, by route family.",
            ["route"], registry=r)
        self.sent = Counter(
            "twistreg_http_response_bytes", "Response body bytes sent, by route family.",
            ["route"], registry=r)
        self.uploads = Gauge(
            "twistreg_uploads_in_flight", "Request bodies streaming into storage now.",
            ["protocol"], multiprocess_mode="livesum", registry=r)
        self.cache_hits = Counter(
            "twistreg_cache_hits", "Lookups a cache answered, by cache.", ["cache"], registry=r)
        self.cache_misses = Counter(
            "twistreg_cache_misses", "Lookups a cache could not answer, by cache.", ["cache"],
            registry=r)
        self.storage_errors = Counter(
            "twistreg_storage_errors", "Storage calls that failed (unreachable, silent or"
            " failing store: a 503), by kind.", ["kind"], registry=r)
        self.gc_runs = Counter(
            "twistreg_gc_runs", "Garbage collections run (not dry runs).", registry=r)
        self.gc_reclaimed = Counter(
            "twistreg_gc_reclaimed_bytes", "Bytes garbage collection removed.", registry=r)


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    """This process's metrics, made when first needed (their files, in a worker, too)."""
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def multiprocess() -> bool:
    """Whether this process's values are shared files (prometheus_client's choice at import)."""
    return bool(getattr(_values.ValueClass, "_multiprocess", False))


class Count:
    """
    Increments of one labelled counter, kept in this process until the next L{flush}: an
    addition on the hot path instead of a locked file write.

    @ivar pending: what the next flush adds.
    """

    __slots__ = ("_name", "_labels", "_child", "pending", "__weakref__")

    def __init__(self, name: str, labels: tuple[str, ...]) -> None:
        self._name = name
        self._labels = labels
        self._child: Any = None
        self.pending = 0

    def inc(self, amount: int = 1) -> None:
        self.pending += amount

    def flush(self) -> None:
        if not self.pending:
            return
        if self._child is None:
            metric = getattr(metrics(), self._name)
            self._child = metric.labels(*self._labels) if self._labels else metric
        pending, self.pending = self.pending, 0
        self._child.inc(pending)


_counts: dict[tuple[str, tuple[str, ...]], Count] = {}


def count(name: str, *labels: str) -> Count:
    """
    The one L{Count} of a counter of L{_Metrics} (C{cache_hits}, C{storage_errors}...) with
    these label values: resolve it once and keep it.
    """
    key = (name, labels)
    found = _counts.get(key)
    if found is None:
        found = _counts[key] = Count(name, labels)
    return found


class _Slot:
    """What the requests of one route family, method and status added since the last flush."""

    __slots__ = ("requests", "sent", "received", "seconds", "buckets", "children")

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self.received = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.children: tuple[Any, ...] | None = None


class RequestTally:
    """
    The requests a Site answered, kept as plain numbers per route family, method and status
    until L{flush} adds them to the metrics.
    """

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str, int], _Slot] = {}
        _tallies.add(self)

    def record(self, request: Any) -> None:
        """
        One finished request: its C{route_family}, C{method}, C{code}, C{sentLength}, the
        C{received} count of its body and its C{started} time (C{time.monotonic}).
        """
        key = (request.route_family, METHODS.get(request.method, "other"), request.code)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        seconds = monotonic() - request.started
        slot.requests += 1
        slot.sent += request.sentLength
        slot.received += getattr(request.content, "received", 0)
        slot.seconds += seconds
        slot.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1

    def flush(self) -> None:
        """Add what was recorded to the metrics, and start again from zero."""
        for (family, method, code), slot in self._slots.items():
            if not slot.requests:
                continue
            if slot.children is None:
                m = metrics()
                slot.children = (m.requests.labels(family, method, str(code)),
                                 m.duration.labels(family, method),
                                 m.sent.labels(family), m.received.labels(family))
            requests, duration, sent, received = slot.children
            requests.inc(slot.requests)
            if slot.sent:
                sent.inc(slot.sent)
            if slot.received:
                received.inc(slot.received)
            _observe_many(duration, slot.buckets, slot.seconds)
            slot.requests = slot.sent = slot.received = 0
            slot.seconds = 0.0
            slot.buckets = [0] * len(slot.buckets)


def _observe_many(histogram: Any, buckets: list[int], seconds: float) -> None:
    """
    Add many observations to a histogram child at once: counts per bucket and their sum.

    prometheus_client has no public call for it (C{observe} takes one value, and costs a
    file write per call in multiprocess mode); its C{_buckets} and C{_sum} values have kept
    these names across releases (0.16, Debian 12's, to 0.26), and the tests read the page.
    """
    for index, number in enumerate(buckets):
        if number:
            histogram._buckets[index].inc(number)
    histogram._sum.inc(seconds)


_tallies: weakref.WeakSet[RequestTally] = weakref.WeakSet()


def flush() -> None:
    """Add every count this process kept to the metrics (its shared file, in a pool)."""
    for tally in list(_tallies):
        tally.flush()
    for pending in _counts.values():
        pending.flush()


def start_flushing(clock: Any, interval: float = FLUSH_INTERVAL) -> task.LoopingCall:
    """
    Flush every C{interval} seconds; stop the returned call (which flushes once more) when
    the process stops serving.
    """
    job = task.LoopingCall(flush)
    job.clock = clock
    job.start(interval, now=False)
    return job


def uploads_in_flight(protocol: str) -> Any:
    """The in-flight uploads gauge of C{v1} or C{v2}: C{inc} as a body starts, C{dec} at its end."""
    return metrics().uploads.labels(protocol)


def record_gc(report: Any) -> None:
    """
    Count a collection that ran (not a dry run): C{twistreg_gc_runs_total} and the bytes it
    removed, C{twistreg_gc_reclaimed_bytes_total}.

    @param report: a L{twistreg.gc.report.Report}.
    """
    if report.dry_run:
        return
    if _pool is not None:
        # The master of a pool collects: its counts go to the pool's directory.
        _pool.count("gc_runs")
        _pool.count("gc_reclaimed", report.total_bytes)
        return
    count("gc_runs").inc()
    count("gc_reclaimed").inc(report.total_bytes)


def exposition(directory: str | None = None) -> bytes:
    """
    The metrics page, in Prometheus text format: summed over every process writing to
    C{directory} (or to this process's own, in multiprocess mode), else this process's.
    """
    flush()
    if directory is None and not multiprocess():
        return generate_latest(metrics().registry)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    return generate_latest(registry)


_pool: PoolMetrics | None = None


class PoolMetrics:
    """
    The master's part: the directory every worker writes its metrics to (fresh at start,
    removed at stop), and the workers' starts, exits and recycles, which the master counts
    in its own file there.

    @param parent: where to make the directory (the pid file's, else the temporary one).
    """

    _COUNTERS = {
        "spawn": ("twistreg_worker_starts", "Worker processes started."),
        "exit": ("twistreg_worker_exits", "Worker processes that ended (any reason)."),
        "recycle": ("twistreg_worker_recycles",
                    "Workers that asked to be replaced (max requests, memory)."),
        # The same as the single process's (L{_Metrics}): the master runs the collections.
        "gc_runs": ("twistreg_gc_runs", "Garbage collections run (not dry runs)."),
        "gc_reclaimed": ("twistreg_gc_reclaimed_bytes", "Bytes garbage collection removed."),
    }

    def __init__(self, parent: str | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="twistreg-metrics-", dir=parent)
        self._previous = os.environ.get(DIRECTORY_VARIABLE)
        # Read by prometheus_client when it opens a file, in this process, and passed on to
        # the workers with the rest of the environment.
        os.environ[DIRECTORY_VARIABLE] = self.directory
        value_class = _values.MultiProcessValue()
        self._counters = {
            kind: value_class("counter", name, name + "_total", (), (), text)
            for kind, (name, text) in self._COUNTERS.items()
        }
        global _pool
        _pool = self

    def count(self, kind: str, amount: float = 1) -> None:
        """Add to one of the master's counters (C{spawn}, C{gc_runs}...)."""
        self._counters[kind].inc(amount)

    def worker_event(self, kind: str, pid: int | None) -> None:
        """What the arbiter reports of a worker: counted, and an ended one's live gauges go."""
        if kind in ("spawn", "exit", "recycle"):
            self.count(kind)
        if kind == "exit" and pid is not None:
            mark_process_dead(pid, self.directory)

    def close(self) -> None:
        """Remove the directory, and the variable from this process's environment."""
        global _pool
        if _pool is self:
            _pool = None
        if self._previous is None:
            os.environ.pop(DIRECTORY_VARIABLE, None)
        else:
            os.environ[DIRECTORY_VARIABLE] = self._previous
        shutil.rmtree(self.directory, ignore_errors=True)
