#!/usr/bin/env python3
"""twistreg on S3 (SeaweedFS) in one run: layers against boto3, cache_lru, token-mode pulls.

Starts SeaweedFS and Redis on 127.0.0.1 (the servers of examples/cluster/run.py), then:

1. layers: a --layer-size layer PUT through twistreg (--workers workers; PUT json, then the
   layer with Content-Length, then the checksum that proves it was stored whole) against
   boto3's upload_file of the same file to the same SeaweedFS, and GET /v1/images/<id>/layer
   against boto3's download_fileobj, both to a null sink; --repeat rounds, the order swapped
   every round; MB/s (medians), twistreg/boto3, and the peak RSS (VmHWM) of every worker;
2. json: GET /v1/images/<id>/json requests/s with wrk at --connections, twistreg with
   cache_lru against twistreg without it, on the same image, runs alternating;
3. pull: a --layers layer image pulled docker 1.x style through two token-mode nodes
   (standalone: false) from a stub index served by this script, each request on a new
   connection and the nodes taking turns, with the cache Redis and without it: how many
   round trips the nodes made to the index per pull.

    .venv/bin/python bench/s3.py                          # ~2 minutes
    .venv/bin/python bench/s3.py --layer-size 256M --duration 2 --only layers json

Exit status: 0 when every goal is met, 1 when one is missed, 2 when a server or tool is
missing or a step failed. bench/README.md tells more.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as single  # noqa: E402
from examples.cluster import run as cluster  # noqa: E402
from twistreg.checksums import payload_checksum  # noqa: E402

MIB = 1 << 20
PREFIX = "/bench"
REPOSITORY = "bench/pull"
SMALL_ID = hashlib.sha256(b"twistreg-bench s3 small").hexdigest()
GOALS = {"PUT": 0.7, "GET": 0.8, "rss_mib": 80.0, "json": 3.0, "index_calls": 1}
PARTS = ("layers", "json", "pull")
STOP_TIMEOUT = 30.0


class CannotMeasure(Exception):
    """A server or tool is missing, or a step failed: exit status 2."""


# --- servers ---------------------------------------------------------------------------------


class Servers:
    """SeaweedFS, Redis and twistreg nodes of one run, all stopped by L{stop}."""

    def __init__(self, work: Path, workers: int) -> None:
        self.work = work
        self.workers = workers
        self.seaweedfs = cluster.SeaweedFS(work / "seaweedfs")
        self.redis = cluster.Redis(work / "redis")
        self._started: list[cluster.Service] = []
        self._names = itertools.count(1)

    def start(self) -> Servers:
        for server in (self.seaweedfs, self.redis):
            self._started.append(server)
            server.start()
        return self

    def node(self, **settings: Any) -> cluster.Node:
        """A twistreg node on the bucket's bench prefix, with these config keys on top."""
        name = f"node-{next(self._names)}"
        config = cluster.write_config(self.work / f"{name}.yml", {
            **self.seaweedfs.storage_keys(PREFIX), "standalone": True, "loglevel": "info",
            **settings})
        node = cluster.Node(name, self.work / name, config, cluster.free_ports(1)[0],
                            self.workers)
        self._started.append(node)
        return node.start()

    def redis_section(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.redis.port}

    def s3(self) -> Any:
        """A boto3 client of the SeaweedFS (path-style, as twistreg is configured)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.seaweedfs.port}",
            region_name=cluster.REGION, aws_access_key_id=cluster.ACCESS_KEY,
            aws_secret_access_key=self.seaweedfs.secret_key,
            config=Config(s3={"addressing_style": "path"}))

    def stop(self, *nodes: cluster.Service) -> None:
        """Stop these (default: everything started, the last first)."""
        for server in list(nodes) or self._started[::-1]:
            server.stop(STOP_TIMEOUT)
            if server in self._started:
                self._started.remove(server)


def as_bench_server(node: cluster.Node) -> single.Server:
    """run.py's view of a node: its session is sampled for CPU and RSS during transfers."""
    return single.Server(node.name, node.port, node.pid, node.directory, node.log)


def peak_rss_mib(pids: list[int]) -> dict[int, float]:
    """VmHWM of each process: the most it was resident at once since it started."""
    peaks = {}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1]) / 1024
    return peaks


def push(port: int, image_id: str, layer: bytes, parent: str | None = None) -> None:
    """An image as docker 1.x pushes it: json, layer, checksum."""
    document = json.dumps({"id": image_id, **({"parent": parent} if parent else {})}).encode()
    single.expect_ok(port, "PUT", f"/v1/images/{image_id}/json", document,
                     Content_Type="application/json")
    single.expect_ok(port, "PUT", f"/v1/images/{image_id}/layer", layer)
    single.put_checksum(port, image_id, payload_checksum(document, layer))


# --- 1. layers -------------------------------------------------------------------------------


def layer_round(node: cluster.Node, s3: Any, layer: Path, size: int, image_id: str,
                checksum: str, twistreg_first: bool) -> dict[str, float]:
    """PUT then GET through twistreg and with boto3, in the given order: MB/s of each."""
    server = as_bench_server(node)
    key = f"boto3/{image_id}"
    url = f"http://127.0.0.1:{node.port}/v1/images/{image_id}/layer"

    def twistreg_put() -> float:
        single.put_image_json(node.port, image_id)
        sent = single.curl_transfer(server, ["-T", str(layer), "-H", "Expect:", "-H",
                                             "Content-Type: application/octet-stream",
                                             "-o", os.devnull, url], size, "PUT")
        single.put_checksum(node.port, image_id, checksum)
        return sent.mbps

    def twistreg_get() -> float:
        return single.curl_transfer(server, ["-o", os.devnull, url], size, "GET").mbps

    def boto3_put() -> float:
        return size / timed(lambda: s3.upload_file(str(layer), cluster.BUCKET, key)) / 1e6

    def boto3_get() -> float:
        with open(os.devnull, "wb") as sink:
            return size / timed(lambda: s3.download_fileobj(cluster.BUCKET, key, sink)) / 1e6

    pairs = {"PUT": (twistreg_put, boto3_put), "GET": (twistreg_get, boto3_get)}
    result = {}
    for kind, (ours, theirs) in pairs.items():
        order = [("twistreg", ours), ("boto3", theirs)]
        for client, measure in order if twistreg_first else order[::-1]:
            result[f"{client} {kind}"] = measure()
    # Every round writes 2 layers: the next one should not find SeaweedFS fuller.
    for name in (key, *object_keys(s3, f"{PREFIX.strip('/')}/images/{image_id}/")):
        s3.delete_object(Bucket=cluster.BUCKET, Key=name)
    return result


def timed(call) -> float:
    """Seconds a call took, after a sync (as run.py's transfers): no earlier write is
    flushed on its time."""
    os.sync()
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def object_keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def layers(servers: Servers, node: cluster.Node, args: argparse.Namespace) -> dict[str, Any]:
    size = args.layer_size
    ids = [hashlib.sha256(f"twistreg-bench s3 layer {i}".encode()).hexdigest()
           for i in range(args.repeat)]
    layer = servers.work / "layer.bin"
    checksums = single.make_layer(layer, size, ids)
    s3 = servers.s3()
    rounds = []
    for i, image_id in enumerate(ids):
        rounds.append(layer_round(node, s3, layer, size, image_id, checksums[image_id],
                                  twistreg_first=i % 2 == 0))
        print(f"  layer round {i + 1}/{args.repeat}: " + ", ".join(
            f"{name} {mbps:.0f}" for name, mbps in rounds[-1].items()) + " MB/s", file=sys.stderr)
    layer.unlink()
    result: dict[str, Any] = {"layer_mib": size // MIB, "runs": rounds}
    for name in rounds[0]:
        result[name] = statistics.median(r[name] for r in rounds)
    for kind in ("PUT", "GET"):
        result[f"{kind} ratio"] = result[f"twistreg {kind}"] / result[f"boto3 {kind}"]
    result["worker_rss_mib"] = peak_rss_mib(node.worker_pids())
    return result


# --- 2. image json with and without cache_lru ---------------------------------------------------


def json_rates(plain: cluster.Node, cached: cluster.Node,
               args: argparse.Namespace) -> dict[str, Any]:
    push(plain.port, SMALL_ID, bytes(range(256)) * 4)
    lua = plain.directory.parent / "report.lua"
    lua.write_text(single.WRK_REPORT_LUA)
    path = f"/v1/images/{SMALL_ID}/json"
    nodes = {"without cache_lru": plain, "with cache_lru": cached}
    for node in nodes.values():
        single.run_wrk(node.port, path, 10, single.WARMUP_S, lua)
    runs: dict[str, list[dict]] = {name: [] for name in nodes}
    for i in range(args.repeat):
        for name, node in list(nodes.items())[:: 1 if i % 2 == 0 else -1]:
            report = single.run_wrk(node.port, path, args.connections, args.duration, lua)
            report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
            runs[name].append(report)
    result: dict[str, Any] = {"connections": args.connections}
    for name, reports in runs.items():
        result[name] = {"rps": statistics.median(r["rps"] for r in reports),
                        "runs": [round(r["rps"]) for r in reports],
                        "p99_ms": statistics.median(r["p99_us"] for r in reports) / 1000,
                        "errors": sum(r["errors"] for r in reports)}
    result["ratio"] = result["with cache_lru"]["rps"] / result["without cache_lru"]["rps"]
    return result


# --- 3. a token-mode pull through two nodes ------------------------------------------------------


class StubIndex:
    """
    The index a docker 1.x pull talks to first, on 127.0.0.1: it gives the client a token
    for the repository's image list (a request with C{X-Docker-Token: true}), and answers
    the nodes that validate it (the same path, the token as C{Authorization}) or ask for
    access to an image. It counts the nodes' calls: the round trips the token cache saves.
    """

    def __init__(self, images: list[str]) -> None:
        self.images = images
        self.valid: set[str] = set()
        self.calls: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, headers, body = index.answer(self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json",
                                    "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, path: str, headers: Any) -> tuple[int, dict[str, str], Any]:
        images = f"/v1/repositories/{REPOSITORY}/images"
        if path == images and headers.get("X-Docker-Token") == "true":
            signature = secrets.token_hex(8)
            self.valid.add(signature)
            token = f'Token signature={signature},repository="{REPOSITORY}",access=read'
            return 200, {"X-Docker-Token": token}, [{"id": i} for i in self.images]
        self.calls.append(path)
        signature = re.search(r"signature=(\w+)", headers.get("Authorization", ""))
        if signature is None or signature.group(1) not in self.valid:
            return 401, {}, {"error": "invalid token"}
        if path == images:
            return 200, {}, [{"id": i} for i in self.images]
        if re.fullmatch(rf"/v1/repositories/{REPOSITORY}/layer/\w+/access", path):
            return 200, {}, {"access": True}
        return 404, {}, {"error": "not found"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def get(port: int, path: str, headers: dict[str, str]) -> bytes:
    """One request on a new connection, as a client spread over processes makes them."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise CannotMeasure(f"GET {path} on port {port}: {response.status} {body[:200]!r}")
    return body


def pull(index: StubIndex, nodes: list[cluster.Node], digests: dict[str, str]) -> float:
    """A docker 1.x pull: the token from the index, then tags, ancestry, and the json and
    layer of every image, the nodes taking turns; seconds."""
    started = time.perf_counter()
    port = int(index.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/v1/repositories/{REPOSITORY}/images",
                       headers={"X-Docker-Token": "true"})
    response = connection.getresponse()
    response.read()
    connection.close()
    headers = {"Authorization": response.headers["X-Docker-Token"]}
    turns: Iterator[cluster.Node] = itertools.cycle(nodes)
    tags = json.loads(get(next(turns).port, f"/v1/repositories/{REPOSITORY}/tags", headers))
    ancestry = json.loads(get(next(turns).port, f"/v1/images/{tags['latest']}/ancestry",
                              headers))
    for image_id in reversed(ancestry):
        get(next(turns).port, f"/v1/images/{image_id}/json", headers)
        layer = get(next(turns).port, f"/v1/images/{image_id}/layer", headers)
        if hashlib.sha256(layer).hexdigest() != digests[image_id]:
            raise CannotMeasure(f"the layer of {image_id[:12]} came back different")
    return time.perf_counter() - started


def token_pulls(servers: Servers, pusher: cluster.Node,
                args: argparse.Namespace) -> dict[str, Any]:
    """Push the image through a standalone node, then pull it from token-mode nodes."""
    ids = [hashlib.sha256(f"twistreg-bench s3 pull {i}".encode()).hexdigest()
           for i in range(args.layers)]
    digests = {}
    parent = None
    for image_id in ids:
        layer = os.urandom(args.pull_layer_size)
        digests[image_id] = hashlib.sha256(layer).hexdigest()
        push(pusher.port, image_id, layer, parent)
        parent = image_id
    single.expect_ok(pusher.port, "PUT", f"/v1/repositories/{REPOSITORY}/tags/latest",
                     json.dumps(ids[-1]).encode())
    servers.stop(pusher)
    index = StubIndex(ids)
    modes = {"with cache": {"cache": servers.redis_section()}, "without cache": {}}
    clusters = {mode: [servers.node(standalone=False, index_endpoint=index.url, **extra)
                       for _ in range(2)] for mode, extra in modes.items()}
    runs: dict[str, dict[str, list]] = {mode: {"calls": [], "seconds": []} for mode in modes}
    try:
        for i in range(args.repeat):
            for mode in list(modes)[:: 1 if i % 2 == 0 else -1]:
                before = len(index.calls)
                runs[mode]["seconds"].append(pull(index, clusters[mode], digests))
                runs[mode]["calls"].append(len(index.calls) - before)
    finally:
        index.close()
    return {"layers": args.layers, "layer_bytes": args.pull_layer_size,
            "requests_per_pull": 2 + 2 * args.layers,
            **{mode: {"index_calls": run["calls"],
                      "median_ms": 1000 * statistics.median(run["seconds"])}
               for mode, run in runs.items()}}


# --- report ------------------------------------------------------------------------------------


def render(results: dict[str, Any], args: argparse.Namespace) -> tuple[str, list[str]]:
    """The report, and the goals missed."""
    out = [f"twistreg on SeaweedFS, {os.cpu_count()} CPUs, --workers {args.workers},"
           f" median of {args.repeat} runs, order alternating"]
    missed = []
    if "layers" in results:
        r = results["layers"]
        rows = []
        for kind in ("PUT", "GET"):
            ratio = r[f"{kind} ratio"]
            rows.append([f"layer {kind} MB/s ({r['layer_mib']} MiB)",
                         f"{r[f'twistreg {kind}']:.0f}", f"{r[f'boto3 {kind}']:.0f}",
                         f"{ratio:.2f}", f">= {GOALS[kind]}",
                         " ".join(f"{x[f'twistreg {kind}']:.0f}/{x[f'boto3 {kind}']:.0f}"
                                  for x in r["runs"])])
            if ratio < GOALS[kind]:
                missed.append(f"layer {kind} {ratio:.2f} x boto3")
        out += ["", single.table(["", "twistreg", "boto3", "ratio", "goal",
                                  "runs (twistreg/boto3)"], rows)]
        peaks = r["worker_rss_mib"]
        peak = max(peaks.values())
        out.append("peak RSS of twistreg's workers (VmHWM): "
                   + ", ".join(f"{mib:.1f}" for mib in peaks.values())
                   + f" MiB (goal < {GOALS['rss_mib']:.0f})")
        if peak >= GOALS["rss_mib"]:
            missed.append(f"worker peak RSS {peak:.1f} MiB")
    if "json" in results:
        r = results["json"]
        rows = [[name, f"{r[name]['rps']:.0f}", f"{r[name]['p99_ms']:.1f}", str(r[name]["errors"]),
                 str(r[name]["runs"])] for name in ("without cache_lru", "with cache_lru")]
        out += ["", f"GET /v1/images/<id>/json, wrk c={r['connections']}",
                single.table(["", "req/s", "p99 ms", "errors", "runs"], rows),
                f"with/without cache_lru: {r['ratio']:.2f} (goal >= {GOALS['json']:.0f})"]
        if r["ratio"] < GOALS["json"]:
            missed.append(f"cache_lru {r['ratio']:.2f} x")
        if any(r[name]["errors"] for name in ("without cache_lru", "with cache_lru")):
            missed.append("wrk errors")
    if "pull" in results:
        r = results["pull"]
        rows = [[mode, str(r[mode]["index_calls"]), f"{r[mode]['median_ms']:.0f}"]
                for mode in ("with cache", "without cache")]
        out += ["", f"token-mode pull of {r['layers']} layers of {r['layer_bytes']} bytes"
                f" ({r['requests_per_pull']} requests, new connection each) through 2 nodes",
                single.table(["", "index round trips per pull", "median ms"], rows)]
        if max(r["with cache"]["index_calls"]) > GOALS["index_calls"]:
            missed.append(f"index round trips with cache {r['with cache']['index_calls']}")
    out.append("\nevery goal met" if not missed else "\ngoals missed: " + "; ".join(missed))
    return "\n".join(out), missed


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer-size", type=single.parse_size, default=1024 * MIB,
                   help="whole MiB: 1G (default), 256M")
    p.add_argument("--repeat", type=int, default=3, help="runs of everything (the median counts)")
    p.add_argument("--workers", type=int, default=2, help="twistreg --workers (default 2)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=100, help="wrk connections (default 100)")
    p.add_argument("--layers", type=int, default=30, help="layers of the pulled image")
    p.add_argument("--pull-layer-size", type=single.parse_size, default=MIB,
                   help="size of each pulled layer, whole MiB (default 1M)")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                   help="measure only these parts")
    p.add_argument("--storage", type=Path, help="parent of the work dir (default: the temp dir)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if min(args.repeat, args.workers, args.duration, args.connections, args.layers) < 1:
        p.error("--repeat, --workers, --duration, --connections and --layers must be >= 1")
    return args


def missing() -> list[str]:
    lacking = [line for line in cluster.missing() if not line.startswith(("PostgreSQL", "nginx"))]
    lacking += [f"{tool} (Debian package {tool})" for tool in ("wrk", "curl")
                if shutil.which(tool) is None]
    if importlib.util.find_spec("boto3") is None:
        lacking.append("boto3, the client compared with (pip install boto3)")
    return lacking


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lacking = missing()
    if lacking:
        print("missing:\n  " + "\n  ".join(lacking), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="twistreg-bench-s3-", dir=args.storage))
    servers = Servers(work, args.workers)
    results: dict[str, Any] = {}
    try:
        servers.start()
        plain = servers.node()
        print(f"SeaweedFS, Redis and twistreg up; measuring in {work}", file=sys.stderr)
        if "layers" in args.only:
            results["layers"] = layers(servers, plain, args)
        if "json" in args.only:
            cached = servers.node(cache_lru=servers.redis_section())
            results["json"] = json_rates(plain, cached, args)
            servers.stop(cached)
        if "pull" in args.only:
            results["pull"] = token_pulls(servers, plain, args)
    except (CannotMeasure, cluster.ServiceError, single.BenchError,
            subprocess.CalledProcessError) as error:
        print(f"s3 bench: cannot measure: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("s3 bench: interrupted; servers stopped, work dir removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)
    report, missed = render(results, args)
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "missed": missed}, indent=2,
                                        default=str) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
