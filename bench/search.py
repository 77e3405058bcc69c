#!/usr/bin/env python3
"""Search latency at 10,000 repositories (issue 3): R26's query, directly and over HTTP.

Fills a search index (SQLite; PostgreSQL too with --postgresql) with 10,000 repository keys,
then times substring queries one after the other: SearchIndex.search() itself (one database
interaction, thread hop included) and GET /v1/search through a real Site on 127.0.0.1 with a
keep-alive treq client in the same process. Also times the row updates the routes make (R13's
register of a new repository), since a route waits for them. Target: median under 50 ms.

    python bench/search.py                                   # SQLite
    python bench/search.py --postgresql start                # and a throwaway PostgreSQL
    python bench/search.py --postgresql postgresql://u@host/db
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

# Measure the source tree this file belongs to, installed or not.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import attrs  # noqa: E402
import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from twistreg.config import load_settings  # noqa: E402
from twistreg.registry.search import SearchIndex, postgresql_index, sqlite_index  # noqa: E402
from twistreg.service import build_registry  # noqa: E402
from twistreg.web.site import registry_resource  # noqa: E402

TARGET_MS = 50.0
WORDS = (
    "alpine app base build cache cli core data db debian dev edge env etl gateway go gpu "
    "java jdk jenkins job kafka lib linux log mail metrics ml mongo mysql net nginx node "
    "ops php postgres proxy python queue redis ruby rust search server service spark sql "
    "ssh static stream test tools ubuntu util vault web worker"
).split()

# (label, q, n): what docker and podman send (n=25), rare and common substrings, no match,
# LIKE wildcards, and the whole index on one page.
QUERIES = (
    ("rare substring, n=25", "kafka-vault", 25),
    ("common substring, n=25", "web", 25),
    ("common substring, all", "web", None),
    ("one namespace, n=25", "team042/", 25),
    ("no match", "zzzznotfound", 25),
    ("wildcards a_p%e", "a_p%e", 25),
    ("empty q, n=100", "", 100),
)


def repository_keys(count: int) -> list[str]:
    """C{count} distinct keys such as C{team042/redis-web-7}, the same every run."""
    rng = random.Random(20251127)
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < count:
        key = (f"team{rng.randrange(200):03d}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
               f"-{rng.randrange(100)}")
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary(seconds: list[float]) -> str:
    """C{median / p99} in milliseconds."""
    return f"{statistics.median(seconds) * 1000:.2f} / {percentile(seconds, 0.99) * 1000:.2f}"


async def get(url: str, params: dict) -> None:
    response = await treq.get(url, params=params)
    await response.content()


async def timed(call, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


async def measure(
    reactor, name: str, index: SearchIndex, keys: list[str], runs: int
) -> tuple[list, list[float]]:
    """
    Fill C{index} with C{keys}, then time every query.

    @return: rows for the table, and the median of every search (seconds).
    """
    await index.open()
    started = time.perf_counter()
    await index.rebuild(keys)
    fill_s = time.perf_counter() - started

    settings = load_settings(None, environ={}, system_config_path=None,
                             overrides={"storage_path": tempfile.mkdtemp(prefix="bench-")})
    registry = attrs.evolve(build_registry(settings, reactor), search=index)
    site = Site(registry_resource(registry))
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/v1/search"
    rows = [(name, f"fill {len(keys)} rows", "", f"{fill_s * 1000:.0f} ms once", "")]
    medians = []
    try:
        for label, query, n in QUERIES:
            count = (await index.search(query, n, 1))[0]
            direct = await timed(partial(index.search, query, n, 1), runs, 5)
            params = {"q": query, **({} if n is None else {"n": str(n)})}
            http = await timed(partial(get, base, params), runs, 5)
            rows.append((name, label, count, summary(direct), summary(http)))
            medians += [statistics.median(direct), statistics.median(http)]
        fresh = iter([f"bench/new-{i}" for i in range(runs + 5)])
        register = await timed(lambda: index.register(next(fresh)), runs, 5)
        rows.append((name, "register a new key (R13)", "", summary(register), ""))
    finally:
        await port.stopListening()
        index.close()
    return rows, medians


def print_table(rows: list) -> None:
    header = ("backend", "query", "matches", "direct ms median / p99", "HTTP ms median / p99")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


async def main(reactor, options: argparse.Namespace) -> None:
    keys = repository_keys(options.repositories)
    rows: list = []
    medians: list[float] = []
    with tempfile.TemporaryDirectory(prefix="twistreg-bench-") as directory:
        index = sqlite_index(os.path.join(directory, "docker-registry.db"), reactor)
        backend_rows, backend_medians = await measure(reactor, "sqlite", index, keys, options.runs)
        rows += backend_rows
        medians += backend_medians
    if options.postgresql:
        server = None
        url = options.postgresql
        if url == "start":
            from tests.postgres import PostgresServer, find_binaries

            server = PostgresServer(find_binaries()).start()
            url = server.create_database()
        try:
            index = postgresql_index(url, reactor)
            backend_rows, backend_medians = await measure(
                reactor, "postgresql", index, keys, options.runs
            )
            rows += backend_rows
            medians += backend_medians
        finally:
            if server is not None:
                server.stop()
    print_table(rows)
    worst = max(medians) * 1000
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"\ntarget: every search median under {TARGET_MS:.0f} ms: {verdict}"
          f" (worst {worst:.2f} ms; {options.runs} runs per line)")


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per line")
    parser.add_argument("--postgresql", metavar="URL|start",
                        help="also measure PostgreSQL: a database URL, or 'start' for a"
                             " throwaway server (needs Debian's postgresql package)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parse_options(sys.argv[1:]))))
