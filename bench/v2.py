#!/usr/bin/env python3
"""twistreg's V2 API against the Go registry (distribution 2.8), side by side in one run.

Both servers run at once on 127.0.0.1 and every measurement alternates between them (A then B,
then B then A ...; the median of --repeat runs counts):

1. small requests, 100 keep-alive connections, one client thread: manifest GET by tag and
   blob GET with wrk, blob HEAD with hey (wrk waits for a body after a HEAD answer that has a
   Content-Length); requests/s, p50/p99 and the server's CPU per request;
2. a --blob-size blob pushed with curl (`-T file`, sized and chunked) and pulled to
   /dev/null: MB/s, the server's CPU seconds and the peak RSS of each of its processes;
3. `skopeo copy` of a 10-layer OCI image into each registry and out again: wall seconds.

    .venv/bin/python bench/v2.py                        # about 4 minutes
    .venv/bin/python bench/v2.py --only small --duration 2 --repeat 1 --json v2.json

twistreg runs from this source tree (a drop-in plugin folder on PYTHONPATH, as bench/versus.py
does), the Go registry as Debian's `docker-registry serve`. bench/README.md tells more.

Exit status: 0 when everything ran (whether the targets were met or not), 1 when a server
failed to start or answered wrongly, 2 when a tool is missing, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import pool, versus  # noqa: E402
from bench import run as single  # noqa: E402

DISTRIBUTION = "docker-registry"
TOOLS = ("wrk", "hey", "curl", "skopeo", DISTRIBUTION)
MIB = pool.MIB
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SMALL = "bench/small"
IMAGE_LAYERS = 10
IMAGE_LAYER_SIZE = 4 * MIB
SKOPEO_TIMEOUT_S = 600
# containers/image (skopeo, podman) tries HTTPS first, then plain HTTP; it gives up on a TLS
# handshake after this long (Go's http.Transport TLSHandshakeTimeout).
TLS_HANDSHAKE_TIMEOUT_S = 10.0

RPS_TARGET = 3.0
P99_TARGET_MS = 20.0
MBPS_TARGET = 1.0
SECONDS_TARGET = 1.0

# How a blob is pushed: in one POST with its digest (where the server takes it: distribution 2.8
# answers such a POST with a session and drops the body), or a session then one PUT with the
# body; the body sized or chunked.
PUSHES = (
    ("push sized, one POST", "POST", []),
    ("push chunked, one POST", "POST", ["-H", "Transfer-Encoding: chunked"]),
    ("push sized, POST + PUT", "PUT", []),
    ("push chunked, POST + PUT", "PUT", ["-H", "Transfer-Encoding: chunked"]),
)
GET_BLOB = "GET"


@dataclasses.dataclass
class Registry:
    """A running server: its whole process tree is the session whose leader is C{session}.

    @ivar storage: the directory holding its C{docker/registry/v2} tree.
    @ivar workers: the processes that serve requests (twistreg's master only hands them out).
    @ivar one_post: whether it takes a blob in one C{POST ?digest=}; found out when seeding.
    """

    name: str
    port: int
    session: int
    storage: Path
    workers: list[int]
    stop: Callable[[], object]
    one_post: bool = False

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(f"http://127.0.0.1:{self.port}/", path)

    def role(self, pid: int) -> str:
        """What a process of the session is, for the RSS report."""
        if pid in self.workers:
            return f"worker {pid}" if len(self.workers) > 1 or pid != self.session else "server"
        return "arbiter" if pid == self.session else f"process {pid}"


# --- servers ----------------------------------------------------------------------------------


def start_twistreg(work: Path, workers: int) -> Registry:
    """C{twist twistreg --workers N} from this source tree, as bench/versus.py runs a tree."""
    server = versus.TreeServer(versus.directory("twistreg", ROOT), work, workers)
    server.check_code()
    server.start()
    return Registry("twistreg", server.port, server.session, server.storage,
                    list(server.pids) or [server.session], server.stop)


def distribution_config(storage: Path, port: int) -> dict:
    """Filesystem storage, errors only in the log; the in-memory blob descriptor cache is the
    one Debian's /etc/docker/registry/config.yml turns on."""
    return {
        "version": "0.1",
        "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(storage)},
                    "cache": {"blobdescriptor": "inmemory"}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }


def start_distribution(work: Path) -> Registry:
    """C{docker-registry serve config.yml} in a session of its own, ready when C{/v2/} answers."""
    home = work / "distribution"
    storage = home / "storage"
    storage.mkdir(parents=True)
    port = single.free_port()
    config = home / "config.yml"
    config.write_text(json.dumps(distribution_config(storage, port)))  # JSON is YAML
    log = home / "server.log"
    with log.open("wb") as output:
        popen = subprocess.Popen(
            [shutil.which(DISTRIBUTION) or DISTRIBUTION, "serve", str(config)], cwd=home,
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=versus._die_with_parent)
    server = single.Server("distribution", port, popen.pid, storage, log, popen=popen)
    deadline = time.monotonic() + single.READY_TIMEOUT_S
    while time.monotonic() < deadline and popen.poll() is None:
        try:
            if single.http_request(port, "GET", "/v2/")[0] == 200:
                return Registry("distribution", port, popen.pid, storage, [popen.pid],
                                partial(single.stop, server))
        except OSError:
            pass
        time.sleep(0.05)
    single.stop(server)
    raise single.BenchError(f"distribution did not answer GET /v2/:\n{single.tail(log)}")


def version_of(command: list[str]) -> str:
    """The first line a tool prints about its version, for the report."""
    done = subprocess.run(command, capture_output=True, text=True)  # wrk -v exits 1
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


# --- HTTP -------------------------------------------------------------------------------------


def call(registry: Registry, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def expect(registry: Registry, status: int, method: str, path: str, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> http.client.HTTPMessage:
    """A request that must answer C{status}; else the exact request and answer, as an error."""
    got, answer_headers, answer = call(registry, method, path, body, headers)
    if got != status:
        raise single.BenchError(
            f"{registry.name}: {method} {path} ({len(body or b'')} bytes) answered {got}"
            f" instead of {status}: {dict(answer_headers)} {answer[:300]!r}")
    return answer_headers


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def with_digest(location: str, digest: str) -> str:
    """An upload URL (absolute or not, with a query or not) with C{digest=} added."""
    parts = urllib.parse.urlsplit(location)
    query = "&".join(filter(None, [parts.query, f"digest={digest}"]))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def session_target(registry: Registry, repository: str, digest: str) -> str:
    """C{POST /v2/<name>/blobs/uploads/}: the path and query that complete the new session with
    the blob of C{digest} (the server's Location may be absolute, and may have a query)."""
    headers = expect(registry, 202, "POST", f"/v2/{repository}/blobs/uploads/")
    target = urllib.parse.urlsplit(with_digest(headers["Location"], digest))
    return f"{target.path}?{target.query}"


def push_blob(registry: Registry, repository: str, data: bytes) -> dict:
    """A session, then one PUT with the body: every V2 server takes that; its descriptor."""
    digest = digest_of(data)
    expect(registry, 201, "PUT", session_target(registry, repository, digest), data,
           {"Content-Type": "application/octet-stream"})
    return {"digest": digest, "size": len(data)}


def takes_one_post(registry: Registry, repository: str, data: bytes) -> bool:
    """Whether C{POST ?digest=} with the body stores the blob (201) or opens a session (202)."""
    path = f"/v2/{repository}/blobs/uploads/?digest={digest_of(data)}"
    status, _, answer = call(registry, "POST", path, data,
                             {"Content-Type": "application/octet-stream"})
    if status not in (201, 202):
        raise single.BenchError(f"{registry.name}: POST {path} answered {status} {answer[:300]!r}")
    return status == 201


def tar_gz(name: str, data: bytes, level: int = 6) -> tuple[bytes, str]:
    """A layer holding one file: its gzip bytes and the digest of its tar (the diff ID)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0), digest_of(raw.getvalue())


def image_documents(layers: list[tuple[bytes, str]]) -> tuple[bytes, bytes]:
    """The config and the OCI manifest of an image of C{layers} (from L{tar_gz})."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(gz), "size": len(gz)}
                   for gz, _ in layers],
    }).encode()
    return config, manifest


@dataclasses.dataclass
class SmallImage:
    """What the small-request points ask for: a manifest by tag and its one layer."""

    manifest: bytes
    layer: bytes

    @property
    def manifest_path(self) -> str:
        return f"/v2/{SMALL}/manifests/latest"

    @property
    def blob_path(self) -> str:
        return f"/v2/{SMALL}/blobs/{digest_of(self.layer)}"


def small_image() -> tuple[SmallImage, bytes]:
    """A config, one small layer and their manifest: the image and its config."""
    layer = tar_gz("hello.txt", b"hello from the v2 bench\n" * 40)
    config, manifest = image_documents([layer])
    return SmallImage(manifest, layer[0]), config


def seed(registry: Registry, image: SmallImage, config: bytes) -> None:
    """Push the small image with plain calls and check both answers the points will ask for;
    find out whether the server takes a blob in one POST."""
    registry.one_post = takes_one_post(registry, "bench/probe", config)
    push_blob(registry, SMALL, config)
    push_blob(registry, SMALL, image.layer)
    expect(registry, 201, "PUT", image.manifest_path, image.manifest,
           {"Content-Type": OCI_MANIFEST})
    status, headers, body = call(registry, "GET", image.manifest_path, None,
                                 {"Accept": OCI_MANIFEST})
    if status != 200 or body != image.manifest:
        raise single.BenchError(f"{registry.name}: GET {image.manifest_path} answered {status}"
                                f" {dict(headers)} {body[:300]!r}, not the manifest pushed")
    headers = expect(registry, 200, "HEAD", image.blob_path)
    if headers.get("Content-Length") != str(len(image.layer)):
        raise single.BenchError(f"{registry.name}: HEAD {image.blob_path} answered"
                                f" Content-Length {headers.get('Content-Length')},"
                                f" not {len(image.layer)}")


# --- small requests ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """A small request: what it is, which tool sends it, how."""

    label: str
    tool: str
    method: str
    path: Callable[[SmallImage], str]
    headers: tuple[tuple[str, str], ...] = ()


POINTS = (
    Point("manifest GET by tag", "wrk", "GET", lambda i: i.manifest_path,
          (("Accept", OCI_MANIFEST),)),
    Point("blob HEAD", "hey", "HEAD", lambda i: i.blob_path),
    Point("blob GET", "wrk", "GET", lambda i: i.blob_path),
)
JUDGED_POINTS = ("manifest GET by tag", "blob HEAD")


def wrk_script(work: Path, point: Point) -> Path:
    """single's report script, with the point's method and headers."""
    script = work / f"{point.label.replace(' ', '-')}.lua"
    lines = [single.WRK_REPORT_LUA, f'wrk.method = "{point.method}"']
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in point.headers]
    script.write_text("\n".join(lines) + "\n")
    return script


def run_hey(port: int, point: Point, path: str, connections: int, duration: int) -> dict:
    """hey with one OS thread, as wrk -t1: the same report as single.run_wrk."""
    command = ["hey", "-z", f"{duration}s", "-c", str(connections), "-t", "10",
               "-m", point.method]
    for name, value in point.headers:
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                         text=True, timeout=duration + 60, env=dict(os.environ, GOMAXPROCS="1"))
    text = out.stdout
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    p50 = re.search(r"50% in ([\d.]+) secs", text)
    p99 = re.search(r"99% in ([\d.]+) secs", text)
    statuses = {int(s): int(n) for s, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    failed = text.split("Error distribution:", 1)[1] if "Error distribution:" in text else ""
    if out.returncode != 0 or not (total and p50 and p99 and statuses):
        raise single.BenchError(f"hey failed on {path}: {out.stderr.strip() or text.strip()}")
    return {
        "requests": sum(statuses.values()),
        "duration_us": float(total.group(1)) * 1e6,
        "errors": sum(n for s, n in statuses.items() if s >= 400)
        + sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", failed, re.M)),
        "p50_us": float(p50.group(1)) * 1e6,
        "p99_us": float(p99.group(1)) * 1e6,
    }


def measure_point(registry: Registry, point: Point, image: SmallImage, connections: int,
                  duration: int, script: Path) -> dict:
    """One run of a point, with the server's CPU over it."""
    path = point.path(image)
    cpu = single.session_cpu(registry.session)
    if point.tool == "wrk":
        report = single.run_wrk(registry.port, path, connections, duration, script)
    else:
        report = run_hey(registry.port, point, path, connections, duration)
    report["cpu_s"] = single.session_cpu(registry.session) - cpu
    report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
    return report


def small_requests(registries: list[Registry], image: SmallImage, args: argparse.Namespace,
                   work: Path) -> dict[str, dict[str, dict]]:
    """Every point on every server, alternating, after a warm-up: medians by point and server."""
    results: dict[str, dict[str, dict]] = {}
    for point in POINTS:
        script = wrk_script(work, point)
        for registry in registries:
            measure_point(registry, point, image, 10, single.WARMUP_S, script)
        runs: dict[str, list[dict]] = {r.name: [] for r in registries}
        for round_ in range(args.repeat):
            for registry in versus.alternate(registries, round_):
                runs[registry.name].append(
                    measure_point(registry, point, image, args.connections, args.duration,
                                  script))
        results[point.label] = {name: {
            "rps": statistics.median(r["rps"] for r in reports),
            "rps_runs": [round(r["rps"]) for r in reports],
            "p50_ms": statistics.median(r["p50_us"] for r in reports) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in reports) / 1000,
            "p99_ms_runs": [round(r["p99_us"] / 1000, 1) for r in reports],
            "errors": sum(r["errors"] for r in reports),
            "cpu_us_per_request": 1e6 * sum(r["cpu_s"] for r in reports)
            / max(1, sum(r["requests"] for r in reports)),
        } for name, reports in runs.items()}
        print(f"  {point.label}: " + ", ".join(
            f"{name} {figures['rps']:.0f} req/s" for name, figures in results[point.label].items()),
            file=sys.stderr)
    return results


# --- blob transfers ---------------------------------------------------------------------------


def resident(pid: int) -> int:
    """A process's resident set size in bytes, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class ProcessPeaks(single.PeakRss):
    """single.PeakRss, but the highest RSS of each process of the session rather than of
    their sum: the target is per worker."""

    def __init__(self, session: int) -> None:
        super().__init__(session)
        self.peaks: dict[int, int] = {}

    def _run(self) -> None:
        while True:
            for pid in single.session_pids(self.session):
                self.peaks[pid] = max(self.peaks.get(pid, 0), resident(pid))
            if self._done.wait(single.RSS_INTERVAL_S):
                return


def curl(args: list[str], timeout: float) -> tuple[int, int, int, float]:
    """One curl: status, bytes up, bytes down, seconds."""
    out = subprocess.run(["curl", "-sS", "-o", os.devnull, "--max-time", f"{timeout:.0f}",
                          "-w", single.CURL_REPORT, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise single.BenchError(f"curl {' '.join(args)} failed: {out.stderr.strip()}")
    status, up, down, seconds = out.stdout.split()[-4:]
    return int(status), int(up), int(down), float(seconds)


def blob_dir(registry: Registry, digest: str) -> Path:
    """Where both servers keep a blob's data: the Go registry's tree."""
    algorithm, hex_ = digest.split(":")
    return registry.storage / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_


def push(registry: Registry, how: str, framing: list[str], blob: Path, digest: str, size: int,
         repository: str, timeout: float) -> float:
    """Push the blob file with curl, one POST or a session then one PUT: seconds taken.

    curl streams the file (C{-T}: C{--data-binary @file} reads it into memory, and curl 7.88
    refuses a file of 1 GiB or more); C{--request-target}, because C{-T} adds the file's name
    to a URL whose path ends with a slash, as the POST's does."""
    seconds = 0.0
    if how == "POST":
        target = f"/v2/{repository}/blobs/uploads/?digest={digest}"
    else:
        started = time.perf_counter()
        target = session_target(registry, repository, digest)
        seconds = time.perf_counter() - started
    status, up, _, taken = curl(
        ["-X", how, "-T", str(blob), "-H", "Expect:", "-H",
         "Content-Type: application/octet-stream", *framing, "--request-target", target,
         registry.url("/")], timeout)
    if status != 201 or up < size:
        raise single.BenchError(f"{registry.name}: {how} {target} with {size} bytes answered"
                                f" {status} ({up} bytes sent)")
    headers = expect(registry, 200, "HEAD", f"/v2/{repository}/blobs/{digest}")
    if headers.get("Content-Length") != str(size):
        raise single.BenchError(f"{registry.name}: HEAD of the pushed blob answered"
                                f" Content-Length {headers.get('Content-Length')}, not {size}")
    return seconds + taken


def pull(registry: Registry, url: str, size: int, timeout: float) -> float:
    """GET the blob to /dev/null with curl: seconds taken."""
    status, _, down, seconds = curl([url], timeout)
    if status != 200 or down != size:
        raise single.BenchError(f"{registry.name}: GET {url} answered {status},"
                                f" {down} bytes of {size}")
    return seconds


def highest(samplings: Iterable[dict[str, float]]) -> dict[str, float]:
    """The highest RSS of each process over several samplings."""
    peaks: dict[str, float] = {}
    for sampling in samplings:
        for role, mib in sampling.items():
            peaks[role] = max(peaks.get(role, 0.0), mib)
    return peaks


def sampled(registry: Registry, action: Callable[[], float]) -> dict:
    """Run a transfer while sampling the server: seconds, CPU seconds, peak RSS per process."""
    os.sync()  # dirty pages of the last transfer would otherwise be written on this one's time
    cpu = single.session_cpu(registry.session)
    with ProcessPeaks(registry.session) as rss:
        seconds = action()
    return {"seconds": seconds, "cpu_s": single.session_cpu(registry.session) - cpu,
            "peak_mib": {registry.role(pid): peak / MIB for pid, peak in rss.peaks.items()}}


def blob_transfers(registries: list[Registry], args: argparse.Namespace,
                   work: Path) -> dict[str, dict[str, dict]]:
    """Each push kind the server takes, --repeat times, then as many GETs of the last blob."""
    blob = work / "blob.bin"
    print(f"  writing the {args.blob_size // MIB} MiB blob", file=sys.stderr)
    digest = "sha256:" + versus.write_layer(blob, args.blob_size)
    size = args.blob_size
    timeout = max(120.0, 2 * size / MIB)
    runs: dict[str, dict[str, list[dict]]] = {r.name: {} for r in registries}
    last: dict[str, str] = {}
    for index, (label, how, framing) in enumerate(PUSHES):
        takers = [r for r in registries if how == "PUT" or r.one_post]
        for round_ in range(args.repeat):
            for registry in versus.alternate(takers, round_):
                # every push writes the whole blob: none is there already
                shutil.rmtree(blob_dir(registry, digest), ignore_errors=True)
                repository = f"bench/big-{index}-{round_}"
                run = sampled(registry, partial(push, registry, how, framing, blob, digest, size,
                                                repository, timeout))
                runs[registry.name].setdefault(label, []).append(run)
                last[registry.name] = repository
    for round_ in range(args.repeat):
        for registry in versus.alternate(registries, round_):
            url = registry.url(f"/v2/{last[registry.name]}/blobs/{digest}")
            runs[registry.name].setdefault(GET_BLOB, []).append(
                sampled(registry, partial(pull, registry, url, size, timeout)))
    blob.unlink()
    results: dict[str, dict[str, dict]] = {}
    for name, kinds in runs.items():
        results[name] = {}
        for label, done in kinds.items():
            mbps = [size / d["seconds"] / 1e6 for d in done]
            middle = sorted(done, key=lambda d: d["seconds"])[len(done) // 2]
            results[name][label] = {"mbps": statistics.median(mbps),
                                    "mbps_runs": [round(m) for m in mbps],
                                    "cpu_s": middle["cpu_s"],
                                    "peak_mib": highest(d["peak_mib"] for d in done)}
        print(f"  {name}: " + ", ".join(f"{label} {f['mbps']:.0f} MB/s"
                                        for label, f in results[name].items()), file=sys.stderr)
    return results


# --- skopeo -----------------------------------------------------------------------------------


def oci_layout(directory: Path, number: int) -> str:
    """An OCI layout of a 10-layer image tagged v1: half random, half repeated text per layer,
    so that gzip has something to do. Returns the manifest digest."""
    rng = random.Random(number)
    half = IMAGE_LAYER_SIZE // 2
    layers = []
    for i in range(IMAGE_LAYERS):
        text = f"line {i} of image {number}: some text that compresses\n".encode()
        data = rng.randbytes(half) + (text * (half // len(text) + 1))[:half]
        layers.append(tar_gz(f"layer-{i}.bin", data, level=1))
    config, manifest = image_documents(layers)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in [config, manifest, *(gz for gz, _ in layers)]:
        (blobs / digest_of(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return digest_of(manifest)


def tls_probe(registry: Registry) -> dict:
    """What a client that tries HTTPS first meets on the plain-HTTP port: the seconds until the
    server answered a TLS ClientHello or closed (at most a little over the client's handshake
    timeout), and what it answered (None: nothing, the connection held open)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    try:
        context.wrap_bio(ssl.MemoryBIO(), outgoing).do_handshake()
    except ssl.SSLWantReadError:
        pass  # the ClientHello is in outgoing, waiting for the server's answer
    with socket.create_connection(("127.0.0.1", registry.port)) as sock:
        sock.settimeout(TLS_HANDSHAKE_TIMEOUT_S + 1)
        started = time.monotonic()
        sock.sendall(outgoing.read())
        try:
            answer: str | None = sock.recv(200).decode("latin-1").split("\r\n")[0]
        except TimeoutError:
            answer = None
        except OSError as error:  # a reset, say
            answer = str(error)
        return {"seconds": time.monotonic() - started, "answer": answer}


def tls_wait(probe: dict) -> float:
    """The seconds a skopeo command waits before it falls back to plain HTTP."""
    return min(probe["seconds"], TLS_HANDSHAKE_TIMEOUT_S)


def skopeo(*arguments: str) -> float:
    """One skopeo copy: wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", *arguments],
                          capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_S)
    if done.returncode != 0:
        raise single.BenchError(f"skopeo copy {' '.join(arguments)}: {done.stderr.strip()}")
    return time.perf_counter() - started


def skopeo_copies(registries: list[Registry], args: argparse.Namespace,
                  work: Path) -> dict[str, dict]:
    """Per round a fresh image (so that skopeo's blob cache has nothing to mount from), pushed
    into each registry, then pulled from each into a fresh layout."""
    times: dict[str, dict] = {r.name: {"push": [], "pull": [], "tls_probe": tls_probe(r)}
                              for r in registries}
    for round_ in range(args.repeat):
        source = work / f"image-{round_}"
        digest = oci_layout(source, round_ + int(time.time()))
        order = versus.alternate(registries, round_)
        for registry in order:
            reference = f"docker://127.0.0.1:{registry.port}/bench/skopeo-{round_}:v1"
            times[registry.name]["push"].append(
                skopeo("--dest-tls-verify=false", f"oci:{source}:v1", reference))
        for registry in order:
            reference = f"docker://127.0.0.1:{registry.port}/bench/skopeo-{round_}:v1"
            pulled = work / f"pulled-{registry.name}-{round_}"
            times[registry.name]["pull"].append(
                skopeo("--src-tls-verify=false", reference, f"oci:{pulled}:v1"))
            index = json.loads((pulled / "index.json").read_text())
            if [m["digest"] for m in index["manifests"]] != [digest]:
                raise single.BenchError(f"{registry.name}: skopeo pulled {index['manifests']},"
                                        f" not the manifest {digest} it pushed")
            shutil.rmtree(pulled)
        shutil.rmtree(source)
    for name, figures in times.items():
        print(f"  {name}: " + ", ".join(f"{d} {statistics.median(figures[d]):.2f} s"
                                        for d in ("push", "pull")), file=sys.stderr)
    return times


# --- report -----------------------------------------------------------------------------------


def judge(figures: dict, names: list[str]) -> list[dict]:
    """Each target: what is compared, the target, twistreg's value, met or not."""
    mine, theirs = names
    rows = []
    for label in JUDGED_POINTS:
        point = figures.get("small", {}).get(label)
        if point:
            rows.append({"figure": f"{label} req/s, {mine}/{theirs}",
                         "target": f">= {RPS_TARGET:g}",
                         "value": point[mine]["rps"] / point[theirs]["rps"],
                         "met": point[mine]["rps"] >= RPS_TARGET * point[theirs]["rps"]})
            rows.append({"figure": f"{label} p99 ms, {mine}", "target": f"<= {P99_TARGET_MS:g}",
                         "value": point[mine]["p99_ms"],
                         "met": point[mine]["p99_ms"] <= P99_TARGET_MS})
    blobs = figures.get("blobs")
    if blobs:
        pairs = [(f"push {kind}: {mine}'s best, {theirs}'s POST + PUT",
                  best_push(blobs[mine], kind), blobs[theirs][f"push {kind}, POST + PUT"])
                 for kind in ("sized", "chunked")]
        pairs += [(f"push {kind}, POST + PUT both", blobs[mine][f"push {kind}, POST + PUT"],
                   blobs[theirs][f"push {kind}, POST + PUT"]) for kind in ("sized", "chunked")]
        pairs.append(("blob GET", blobs[mine][GET_BLOB], blobs[theirs][GET_BLOB]))
        for label, a, b in pairs:
            rows.append({"figure": f"{label} MB/s, {mine}/{theirs}",
                         "target": f">= {MBPS_TARGET:g}", "value": a["mbps"] / b["mbps"],
                         "met": a["mbps"] >= MBPS_TARGET * b["mbps"]})
        workers = worker_peaks(blobs[mine])
        rows.append({"figure": f"peak RSS MiB per {mine} worker", "target":
                     f"< {single.RSS_TARGET_MIB:g}", "value": max(workers.values()),
                     "met": max(workers.values()) < single.RSS_TARGET_MIB})
    copies = figures.get("skopeo")
    if copies:
        for direction in ("push", "pull"):
            a = statistics.median(copies[mine][direction])
            b = statistics.median(copies[theirs][direction])
            rows.append({"figure": f"skopeo {direction} seconds, {mine}/{theirs}",
                         "target": f"<= {SECONDS_TARGET:g}", "value": a / b,
                         "met": a <= SECONDS_TARGET * b})
    return rows


def best_push(transfers: dict[str, dict], kind: str) -> dict:
    """The server's monolithic push: one POST where it takes one, else POST + PUT."""
    return transfers.get(f"push {kind}, one POST") or transfers[f"push {kind}, POST + PUT"]


def worker_peaks(transfers: dict[str, dict]) -> dict[str, float]:
    """The highest RSS of each serving process over every transfer."""
    peaks = highest(figures["peak_mib"] for figures in transfers.values())
    return {role: mib for role, mib in peaks.items()
            if role.startswith("worker") or role == "server"}


def render(figures: dict, names: list[str]) -> str:
    meta = figures["meta"]
    out = [f"twistreg V2 bench: {meta['cpus']} CPUs, {meta['connections']} connections,"
           f" {meta['duration_s']} s x {meta['repeat']} runs per point, blob"
           f" {meta['blob_mib']} MiB, skopeo image {IMAGE_LAYERS} x"
           f" {IMAGE_LAYER_SIZE // MIB} MiB layers; servers alternate, medians",
           f"  twistreg: {meta['twistreg']}", f"  distribution: {meta['distribution']}",
           f"  clients: {meta['clients']}"]
    small = figures.get("small")
    if small:
        header = ["request", "tool"]
        for name in names:
            header += [f"{name} req/s", "p50 ms", "p99 ms", "CPU us/req", "err"]
        rows = []
        for point in POINTS:
            row = [point.label, point.tool]
            for name in names:
                f = small[point.label][name]
                row += [f"{f['rps']:.0f}", f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}",
                        f"{f['cpu_us_per_request']:.0f}", str(f["errors"])]
            mine, theirs = (small[point.label][name]["rps"] for name in names)
            rows.append(row + [f"{mine / theirs:.2f}"])
        out += ["\nSmall requests (keep-alive, one client thread)",
                single.table(header + ["ratio"], rows)]
    blobs = figures.get("blobs")
    if blobs:
        header = ["transfer"]
        for name in names:
            header += [f"{name} MB/s", "runs", "CPU s", "peak MiB"]
        rows = []
        for label in [p[0] for p in PUSHES] + [GET_BLOB]:
            row = [label]
            for name in names:
                f = blobs[name].get(label)
                if f is None:
                    row += ["-", "", "", ""]
                    continue
                row += [f"{f['mbps']:.0f}", "/".join(map(str, f["mbps_runs"])),
                        f"{f['cpu_s']:.2f}", f"{max(f['peak_mib'].values()):.1f}"]
            rows.append(row)
        out += [f"\nBlob of {meta['blob_mib']} MiB with curl -T (MB = 10^6 bytes):"
                " median MB/s, every run, server CPU s of the median run, peak RSS of its"
                " largest process ('-': the server answers POST ?digest= with a session)",
                single.table(header, rows)]
        for name in names:
            peaks = highest(f["peak_mib"] for f in blobs[name].values())
            idle = figures["idle_rss_mib"][name]
            out.append(f"  {name} peak RSS per process, MiB: " + ", ".join(
                f"{role} {mib:.1f} (idle {idle.get(role, 0):.1f})"
                for role, mib in sorted(peaks.items())))
    copies = figures.get("skopeo")
    if copies:
        rows = []
        for direction in ("push", "pull"):
            for less in (0, 1):
                row = [f"skopeo {direction}" + (", less the TLS wait" if less else "")]
                medians = []
                for name in names:
                    wait = less * tls_wait(copies[name]["tls_probe"])
                    runs = [s - wait for s in copies[name][direction]]
                    medians.append(statistics.median(runs))
                    row += [f"{medians[-1]:.2f}", "/".join(f"{s:.2f}" for s in runs)]
                rows.append(row + [f"{medians[0] / medians[1]:.2f}"])
        header = ["copy"] + sum(([f"{name} s", "runs"] for name in names), []) + ["ratio"]
        out += [f"\nskopeo copy of {IMAGE_LAYERS} x {IMAGE_LAYER_SIZE // MIB} MiB layers:"
                " wall seconds, median and every run", single.table(header, rows)]
        for name in names:
            probe = copies[name]["tls_probe"]
            answer = "nothing, connection held open" if probe["answer"] is None else (
                repr(probe["answer"]) if probe["answer"] else "closed")
            out.append(f"  {name}, a TLS ClientHello on its HTTP port (skopeo tries HTTPS"
                       f" first, for up to {TLS_HANDSHAKE_TIMEOUT_S:g} s): after"
                       f" {probe['seconds']:.2f} s, {answer}")
    served = figures["served"].get("twistreg")
    if served:
        out.append(f"\ntwistreg requests served per worker, whole run: {served}"
                   f" ({pool.split(list(served.values()))} %)")
    rows = [[t["figure"], t["target"], f"{t['value']:.2f}", "met" if t["met"] else "NOT met"]
            for t in figures["targets"]]
    out += ["\nTargets (twistreg)", single.table(["figure", "target", "value", ""], rows)]
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="twistreg --workers (default 2)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk/hey run (5)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each point, transfer and copy per server; medians count (3)")
    p.add_argument("--connections", type=int, default=100, help="wrk/hey connections (100)")
    p.add_argument("--blob-size", type=single.parse_size, default=1024 * MIB,
                   help="whole MiB: 1G (default), 256M")
    p.add_argument("--only", nargs="+", choices=["small", "blob", "skopeo"],
                   default=["small", "blob", "skopeo"], help="measure only these")
    p.add_argument("--storage", type=Path, help="parent of the work dir (default: the temp dir)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if min(args.duration, args.repeat, args.connections) < 1:
        p.error("--duration, --repeat and --connections must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages: apt-get install -y"
              f" {' '.join(missing)})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, versus._terminate)
    signal.signal(signal.SIGHUP, versus._terminate)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="twistreg-bench-v2-", dir=args.storage))
    registries: list[Registry] = []
    figures: dict = {"served": {}}
    try:
        registries.append(start_twistreg(work, args.workers))
        registries.append(start_distribution(work))
        image, config = small_image()
        for registry in registries:
            seed(registry, image, config)
        figures["idle_rss_mib"] = {r.name: {r.role(pid): resident(pid) / MIB
                                            for pid in single.session_pids(r.session)}
                                   for r in registries}
        print(f"both servers up (ports {', '.join(str(r.port) for r in registries)});"
              f" measuring in {work}", file=sys.stderr)
        if "small" in args.only:
            figures["small"] = small_requests(registries, image, args, work)
        if "blob" in args.only:
            figures["blobs"] = blob_transfers(registries, args, work)
        if "skopeo" in args.only:
            figures["skopeo"] = skopeo_copies(registries, args, work)
    except (single.BenchError, versus.CannotMeasure, subprocess.TimeoutExpired) as error:
        print(f"bench/v2.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/v2.py: interrupted; servers stopped, work dir removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for registry in registries:
            figures["served"][registry.name] = registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    names = [r.name for r in registries]
    figures["meta"] = {
        "cpus": os.cpu_count(), "workers": args.workers, "connections": args.connections,
        "duration_s": args.duration, "repeat": args.repeat, "blob_mib": args.blob_size // MIB,
        "elapsed_s": round(time.monotonic() - began),
        "twistreg": f"twist twistreg --workers {args.workers} from {ROOT} ({sys.executable})",
        "distribution": version_of([DISTRIBUTION, "--version"]) + ", docker-registry serve"
        " (filesystem, blobdescriptor cache inmemory)",
        "clients": "; ".join(version_of(c) for c in (["wrk", "-v"], ["curl", "--version"],
                                                      ["skopeo", "--version"]))
        + "; hey (GOMAXPROCS=1)",
        "one_post": {r.name: r.one_post for r in registries},
    }
    figures["targets"] = judge(figures, names)
    print(render(figures, names))
    print(f"\nrun took {figures['meta']['elapsed_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
