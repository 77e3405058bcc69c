#!/usr/bin/env python3
"""Side-by-side benchmark of twistreg and the reference docker-registry 0.9.1.

Measures, in one run on this machine: small-request throughput (wrk), layer PUT/GET throughput
(curl), the disk baselines those transfers are judged against (dd write, cat read) and the peak
RSS of each server's process tree during the transfers. bench/README.md tells how to run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

MIB = 1 << 20
CONCURRENCY = (1, 10, 100)
RSS_INTERVAL_S = 0.05
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 35.0  # the reference's gunicorn waits up to 30 s for in-flight requests
WARMUP_S = 1
RSS_TARGET_MIB = 80.0
RATIO_TARGET = 0.5

DEFAULT_SEED_REGISTRY = Path(__file__).resolve().parents[2] / "shared" / "tools" / "seed-registry"

SMALL_ID = hashlib.sha256(b"twistreg-bench small").hexdigest()
SMALL_LAYER = bytes(range(256)) * 4

ENDPOINTS = (
    ("GET /v1/_ping", "/v1/_ping"),
    ("GET /v1/images/<id>/json", f"/v1/images/{SMALL_ID}/json"),
)
TRANSFERS = ("PUT layer chunked", "PUT layer sized", "GET layer")
# How each PUT frames its body: chunked as docker sends it, or with Content-Length.
FRAMINGS = {"PUT layer chunked": ["-H", "Transfer-Encoding: chunked"], "PUT layer sized": []}

# wrk prints its human summary first; this adds one machine-readable line at the end.
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
CURL_REPORT = "%{http_code} %{size_upload} %{size_download} %{time_total}"


class BenchError(Exception):
    """A step failed: the server's figures stop there and the reason is reported."""


@dataclasses.dataclass
class HttpPoint:
    """One wrk run: an endpoint at one concurrency; cpu_us is the server tree's CPU (user and
    system) per request."""

    endpoint: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float


@dataclasses.dataclass
class Transfer:
    """Layer transfers: the median run, every run's MB/s, and the highest RSS of all.

    cpu_s and peak_rss_mib are the server tree's, not curl's.
    """

    mbps: float
    seconds: float
    cpu_s: float
    peak_rss_mib: float
    mbps_runs: list[float]


def summarize(runs: list[Transfer]) -> Transfer:
    """One figure per transfer kind: on this VM a write into never-touched memory can run at a
    third of the speed of the next one, so a single run says little."""
    middle = sorted(runs, key=lambda t: t.mbps)[len(runs) // 2]
    mbps_runs = [m for t in runs for m in t.mbps_runs]
    peak = max(t.peak_rss_mib for t in runs)
    return Transfer(middle.mbps, middle.seconds, middle.cpu_s, peak, mbps_runs)


def median(values: list[float]) -> float:
    """The upper middle value: the same pick summarize makes for transfers."""
    return sorted(values)[len(values) // 2]


@dataclasses.dataclass
class ServerResult:
    """Everything measured for one server; reason is set when it could not run to the end."""

    name: str
    processes: str = ""
    reason: str = ""
    rss_idle_mib: float | None = None
    http: list[HttpPoint] = dataclasses.field(default_factory=list)
    transfers: dict[str, Transfer] = dataclasses.field(default_factory=dict)
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
    """What every server is measured with; made once, before the first server starts."""

    workdir: Path
    layer: Path
    layer_size: int
    duration: int
    ids: dict[str, list[str]]  # per PUT kind, one fresh image id per run
    checksums: dict[str, str]  # image id -> payload checksum of the layer under that id
    base_runs: dict[str, list[float]]  # dd and cat MB/s of each run

    @property
    def base(self) -> dict[str, float]:
        return {k: median(v) for k, v in self.base_runs.items()}


@dataclasses.dataclass
class Server:
    """A running server. All its processes share the session whose leader is `session`."""

    name: str
    port: int
    session: int
    storage: Path
    log: Path
    stop_command: list[str] | None = None
    popen: subprocess.Popen[bytes] | None = None


# --- process tree accounting -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_pids(session: int) -> list[int]:
    """Live processes of a session: the server and every worker it forked or spawned."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == session:
                pids.append(int(entry))
    return pids


def session_rss(session: int) -> int:
    """Summed resident set size, in bytes, of a session's processes."""
    total = 0
    for pid in session_pids(session):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            pass
    return total


def session_cpu(session: int) -> float:
    """Summed user+system CPU seconds of a session's live processes."""
    ticks = 0
    for pid in session_pids(session):
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples a session's total RSS every RSS_INTERVAL_S while a transfer runs.

    Sampling the sum at each instant (rather than adding per-process VmHWM) gives the peak the
    machine actually had to hold.
    """

    def __init__(self, session: int) -> None:
        self.session = session
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, session_rss(self.session))
            if self._done.wait(RSS_INTERVAL_S):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


# --- small helpers -----------------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection; returns status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expect_ok(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> None:
    """Send a setup request that must answer 200, as in a docker push."""
    status, answer = http_request(
        port, method, path, body, {k.replace("_", "-"): v for k, v in headers.items()}
    )
    if status != 200:
        raise BenchError(f"{method} {path} answered {status} {answer[:200]!r}")


def image_json(image_id: str) -> bytes:
    """The smallest valid image JSON (R8); its exact bytes enter the payload checksum."""
    return json.dumps({"id": image_id}).encode()


def put_image_json(port: int, image_id: str) -> None:
    """R8 first: a layer PUT for an image without json is a 404."""
    expect_ok(
        port,
        "PUT",
        f"/v1/images/{image_id}/json",
        image_json(image_id),
        Content_Type="application/json",
    )


def put_checksum(port: int, image_id: str, checksum: str) -> None:
    """Complete the upload; a 400 here means the server hashed the layer wrongly."""
    expect_ok(port, "PUT", f"/v1/images/{image_id}/checksum", X_Docker_Checksum_Payload=checksum)


def payload_hasher(image_id: str) -> hashlib._Hash:
    """sha256 primed with J + newline (docs/storage.md); feed it the layer bytes."""
    return hashlib.sha256(image_json(image_id) + b"\n")


def filesystem_of(path: Path) -> str:
    """'ext4 on /dev/vda': says whether the baselines and the servers share a real disk."""
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    return f"{best[1]} on {best[2]}"


def tail(path: Path, lines: int = 15) -> str:
    """The end of a server log, to say why it did not start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- baselines ---------------------------------------------------------------------------------


def layer_ids(repeat: int) -> dict[str, list[str]]:
    """Fresh image ids for each PUT (a completed image cannot be pushed again), fixed so that
    their payload checksums are computed once, while the layer file is written."""
    return {
        name: [
            hashlib.sha256(f"twistreg-bench {name} {i}".encode()).hexdigest() for i in range(repeat)
        ]
        for name in FRAMINGS
    }


def make_layer(path: Path, size: int, image_ids: list[str]) -> dict[str, str]:
    """Write the layer to PUT and return the payload checksum each large image will need."""
    block = os.urandom(MIB)
    hashers = {image_id: payload_hasher(image_id) for image_id in image_ids}
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(block)
            for h in hashers.values():
                h.update(block)
    return {image_id: "sha256:" + h.hexdigest() for image_id, h in hashers.items()}


def timed(cmd: list[str]) -> float:
    """Wall time of a command whose output goes to /dev/null."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return time.perf_counter() - start


def baselines(workdir: Path, layer: Path, size: int, repeat: int) -> dict[str, list[float]]:
    """MB/s of each run of plain dd (no fsync, like the servers) and of cat of the warm layer."""
    target = workdir / "dd.bin"
    runs: dict[str, list[float]] = {"dd_write_mbps": [], "cat_read_mbps": []}
    for _ in range(repeat):
        os.sync()
        dd_s = timed(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size // MIB}"])
        target.unlink()
        runs["dd_write_mbps"].append(size / dd_s / 1e6)
    for _ in range(repeat):
        runs["cat_read_mbps"].append(size / timed(["cat", str(layer)]) / 1e6)
    return runs


# --- servers -----------------------------------------------------------------------------------


def check_twistreg_installed(workdir: Path) -> str | None:
    """Why twistreg cannot be started by this interpreter, or None.

    `twist twistreg` finds the plugin only in an installed twisted/plugins, so the check runs
    outside the source tree, where an uninstalled checkout cannot shadow the installed package.
    """
    probe = subprocess.run(
        [sys.executable, "-c", "import twistreg, twisted.plugins.twistreg_plugin"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return (
        f"{sys.executable} cannot import twistreg and its plugin ({last}).\n"
        f"Install it into this interpreter's environment first:"
        f" {sys.executable} -m pip install <repo root>"
    )


def wait_ready(server: Server) -> None:
    """Poll GET /v1/_ping: listening is not enough, the app must answer."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.popen is not None and server.popen.poll() is not None:
            raise BenchError(f"exited with status {server.popen.returncode}:\n{tail(server.log)}")
        try:
            if http_request(server.port, "GET", "/v1/_ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(
        f"GET /v1/_ping did not answer 200 within {READY_TIMEOUT_S:.0f} s:\n{tail(server.log)}"
    )


def registry_config(storage: Path) -> str:
    """The config seed-registry writes for the reference, so both servers run the same settings."""
    return (
        "dev:\n  storage: local\n"
        f"  storage_path: {json.dumps(str(storage))}\n"
        "  standalone: true\n  debug: false\n  loglevel: warning\n  search_backend: sqlalchemy\n"
        f"  sqlalchemy_index_database: {json.dumps(f'sqlite:///{storage}.db')}\n"
    )


def _serving(workers: int) -> str:
    """Number agreement for the process lines of the report."""
    return "1 worker serves" if workers == 1 else f"{workers} workers serve"


def twistreg_processes(workers: int) -> str:
    """How many processes serve: workers=0 serves in the one process, N adds an arbiter."""
    if workers == 0:
        return f"twist twistreg --workers 0: 1 process serves, no arbiter ({sys.executable})"
    return (
        f"twist twistreg --workers {workers}: {_serving(workers)}, plus the arbiter"
        f" ({sys.executable})"
    )


def reference_processes(workers: int) -> str:
    """gunicorn's master never serves, so N workers are N serving processes plus one."""
    return (
        f"docker-registry 0.9.1, gunicorn -k gevent -w {workers}: {_serving(workers)},"
        " plus the gunicorn master"
    )


def start_twistreg(workdir: Path, workers: int) -> Server:
    """Run the installed twistreg in a session of its own, so its whole tree can be measured
    and stopped."""
    storage = workdir / "twistreg" / "storage"
    storage.mkdir(parents=True)
    config = storage.with_suffix(".yml")
    config.write_text(registry_config(storage))
    port = free_port()
    log = storage.with_suffix(".log")
    cmd = [
        sys.executable,
        "-m",
        "twisted",
        "twistreg",
        "--config",
        str(config),
        "--flavor",
        "dev",
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--workers",
        str(workers),
    ]
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server("twistreg", port, popen.pid, storage, log, popen=popen)
    try:
        wait_ready(server)
    except BenchError:
        stop(server)
        raise
    return server


def start_reference(workdir: Path, workers: int, seed: Path) -> Server:
    """Install (once) and start 0.9.1 through seed-registry, which setsid's it and waits for it."""
    if not os.access(seed, os.X_OK):
        raise BenchError(f"{seed} not found (pass --seed-registry)")
    install = subprocess.run([str(seed), "install"], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        raise BenchError(f"seed-registry install failed: {install.stderr.strip()}")
    storage = workdir / "reference" / "storage"
    port = free_port()
    started = subprocess.run(
        [
            str(seed),
            "start",
            "--port",
            str(port),
            "--storage",
            str(storage),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        log = tail(storage.with_suffix(".log"))
        raise BenchError(f"seed-registry start failed: {started.stderr.strip()}\n{log}")
    pid = int(started.stdout.split()[-1])
    return Server(
        "reference",
        port,
        pid,
        storage,
        storage.with_suffix(".log"),
        stop_command=[str(seed), "stop", str(pid)],
    )


def stop(server: Server) -> None:
    """TERM the server's process group, wait for the whole session to go, KILL what stays."""
    if server.stop_command:
        subprocess.run(server.stop_command, capture_output=True)
    else:
        try:
            os.killpg(server.session, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.popen is not None:
            server.popen.poll()  # reap the leader so it stops counting
        if not session_pids(server.session):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(server.session, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if server.popen is not None:
        server.popen.wait()


# --- measurements ------------------------------------------------------------------------------


def run_wrk(
    port: int, path: str, connections: int, duration: int, script: Path
) -> dict[str, float]:
    """One keep-alive wrk run; a single client thread is plenty for a Python server on 2 cores."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH ")]
    if out.returncode != 0 or not lines:
        raise BenchError(f"wrk failed on {path}: {out.stderr.strip() or out.stdout.strip()}")
    report = json.loads(lines[-1][len("BENCH ") :])
    if not report["requests"]:
        raise BenchError(f"wrk completed no request on {path}")
    return report


def measure_http(server: Server, duration: int, script: Path) -> list[HttpPoint]:
    for _, path in ENDPOINTS:
        run_wrk(server.port, path, 10, WARMUP_S, script)
    points = []
    for endpoint, path in ENDPOINTS:
        for connections in CONCURRENCY:
            cpu_before = session_cpu(server.session)
            r = run_wrk(server.port, path, connections, duration, script)
            cpu = session_cpu(server.session) - cpu_before
            points.append(
                HttpPoint(
                    endpoint,
                    connections,
                    r["requests"] / (r["duration_us"] / 1e6),
                    r["p50_us"] / 1000,
                    r["p99_us"] / 1000,
                    int(r["errors"]),
                    cpu / r["requests"] * 1e6,
                )
            )
    return points


def curl_transfer(server: Server, curl_args: list[str], size: int, direction: str) -> Transfer:
    """Run curl while sampling the server; checks status and byte count."""
    os.sync()  # earlier dirty pages would otherwise be flushed on this transfer's time
    cpu_before = session_cpu(server.session)
    with PeakRss(server.session) as rss:
        out = subprocess.run(
            ["curl", "-sS", "-w", CURL_REPORT, *curl_args], capture_output=True, text=True
        )
    cpu = session_cpu(server.session) - cpu_before
    if out.returncode != 0:
        raise BenchError(f"curl {direction} failed: {out.stderr.strip()}")
    status, uploaded, downloaded, seconds = out.stdout.split()[-4:]
    # chunk framing counts as uploaded bytes; the checksum PUT that follows checks the content
    short = int(uploaded) < size if direction == "PUT" else int(downloaded) != size
    if status != "200" or short:
        raise BenchError(
            f"{direction} layer answered {status} ({uploaded} bytes up, {downloaded} down)"
        )
    mbps = size / float(seconds) / 1e6
    return Transfer(mbps, float(seconds), cpu, rss.peak / MIB, [mbps])


def measure_layers(server: Server, plan: Plan) -> dict[str, Transfer]:
    """Push images as docker does (json, layer, checksum) with each body framing, then pull one
    of them as many times."""
    base = f"http://127.0.0.1:{server.port}/v1/images"
    pulled = plan.ids["PUT layer sized"]
    results = {}
    for name, framing in FRAMINGS.items():
        runs = []
        for image_id in plan.ids[name]:
            put_image_json(server.port, image_id)
            args = [
                "-X",
                "PUT",
                "-T",
                str(plan.layer),
                "-H",
                "Expect:",
                "-H",
                "Content-Type: application/octet-stream",
                *framing,
                "-o",
                os.devnull,
                f"{base}/{image_id}/layer",
            ]
            runs.append(curl_transfer(server, args, plan.layer_size, "PUT"))
            put_checksum(server.port, image_id, plan.checksums[image_id])
            if image_id != pulled[0]:
                # as dd's file is: the next write reuses this memory instead of fresh pages
                shutil.rmtree(server.storage / "images" / image_id)
        results[name] = summarize(runs)
    url = f"{base}/{pulled[0]}/layer"
    runs = [curl_transfer(server, ["-o", os.devnull, url], plan.layer_size, "GET") for _ in pulled]
    results["GET layer"] = summarize(runs)
    return results


def bench_server(result: ServerResult, start: Callable[[], Server], plan: Plan) -> None:
    """Fill `result`, or set its reason when the server cannot be started or a step fails."""
    try:
        server = start()
        try:
            result.rss_idle_mib = session_rss(server.session) / MIB
            put_image_json(server.port, SMALL_ID)
            expect_ok(server.port, "PUT", f"/v1/images/{SMALL_ID}/layer", SMALL_LAYER)
            small = payload_hasher(SMALL_ID)
            small.update(SMALL_LAYER)
            put_checksum(server.port, SMALL_ID, "sha256:" + small.hexdigest())
            result.http = measure_http(server, plan.duration, plan.workdir / "report.lua")
            result.transfers = measure_layers(server, plan)
        finally:
            stop(server)
    except BenchError as e:
        result.reason = str(e)
        return
    finally:
        shutil.rmtree(plan.workdir / result.name, ignore_errors=True)  # frees disk and page cache
    t, base = result.transfers, plan.base
    result.ratios = {
        "PUT chunked / dd": t["PUT layer chunked"].mbps / base["dd_write_mbps"],
        "PUT sized / dd": t["PUT layer sized"].mbps / base["dd_write_mbps"],
        "GET / cat": t["GET layer"].mbps / base["cat_read_mbps"],
    }


# --- report ------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-align the first column, right-align the rest."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def spread(values: list[float]) -> str:
    """'min-max': shows whether a median hides a bimodal set of runs."""
    return f"{min(values):.0f}-{max(values):.0f}"


def render(results: list[ServerResult], plan: Plan, meta: dict[str, object]) -> str:
    """The servers side by side, one column group each, so a row compares like with like."""
    ok = [r for r in results if not r.reason]
    base, runs = plan.base, plan.base_runs
    out = [
        f"twistreg bench: {meta['cpus']} CPUs, layer {meta['layer_mib']} MiB,"
        f" {meta['duration_s']} s per wrk point, {meta['repeat']} runs per transfer,"
        f" storage {meta['storage']} ({meta['filesystem']})",
    ]
    out += [f"  {r.name}: {r.processes}" for r in results]
    out += [f"  {r.name} unavailable: {r.reason}" for r in results if r.reason]
    out.append(
        f"\nBaselines, same disk, median (range) of {meta['repeat']}:"
        f" dd write (no fsync) {base['dd_write_mbps']:.0f} ({spread(runs['dd_write_mbps'])}) MB/s,"
        f" cat read (warm cache) {base['cat_read_mbps']:.0f} ({spread(runs['cat_read_mbps'])}) MB/s"
    )
    if not ok:
        return "\n".join(out)
    header = ["request", "conc"]
    for r in ok:
        header += [f"{r.name} req/s", "p50 ms", "p99 ms", "CPU us/req", "err"]
    rows = []
    for i, (endpoint, connections) in enumerate((e, c) for e, _ in ENDPOINTS for c in CONCURRENCY):
        row = [endpoint, str(connections)]
        for r in ok:
            p = r.http[i]
            row += [f"{p.rps:.0f}", f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}", f"{p.cpu_us:.0f}",
                    str(p.errors)]
        rows.append(row)
    out += ["\nRequests/s (wrk, keep-alive, 1 client thread)", table(header, rows)]
    header = ["transfer"]
    for r in ok:
        header += [f"{r.name} MB/s", "range", "s", "srv CPU s", "peak RSS MiB"]
    rows = []
    for name in TRANSFERS:
        row = [name]
        for r in ok:
            t = r.transfers[name]
            row += [f"{t.mbps:.0f}", spread(t.mbps_runs), f"{t.seconds:.2f}", f"{t.cpu_s:.2f}"]
            row.append(f"{t.peak_rss_mib:.1f}")
        rows.append(row)
    rows.append(
        ["idle RSS MiB (after start)"]
        + sum(([f"{r.rss_idle_mib:.1f}", "", "", "", ""] for r in ok), [])
    )
    out += [
        f"\nLayer transfers ({meta['layer_mib']} MiB, curl; MB = 10^6 bytes): median run,"
        " range of all runs, highest RSS of all runs",
        table(header, rows),
    ]
    header = ["ratio", "target"] + [r.name for r in ok]
    rows = [[k, f">= {RATIO_TARGET}"] + [f"{r.ratios[k]:.2f}" for r in ok] for k in ok[0].ratios]
    peaks = {r.name: max(t.peak_rss_mib for t in r.transfers.values()) for r in ok}
    rows.append(
        ["peak RSS MiB in transfers", f"< {RSS_TARGET_MIB:.0f}"]
        + [f"{peaks[r.name]:.1f}" for r in ok]
    )
    out += ["\nTargets (apply to twistreg)", table(header, rows)]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'1G', '64M' or a number of MiB: dd writes whole MiB, so sizes are whole MiB."""
    units = {"G": 1024 * MIB, "M": MIB}
    size = (
        int(text[:-1]) * units[text[-1].upper()] if text[-1:].upper() in units else int(text) * MIB
    )
    if size <= 0:
        raise argparse.ArgumentTypeError("layer size must be at least 1M")
    return size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options; the reference gets as many serving processes as twistreg unless told."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument("--twistreg-only", action="store_true", help="skip the reference server")
    only.add_argument("--reference-only", action="store_true", help="skip twistreg")
    p.add_argument(
        "--layer-size", type=parse_size, default=1024 * MIB, help="e.g. 1G (default), 64M"
    )
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk point (default 5)")
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each transfer and baseline (default 3)"
    )
    p.add_argument(
        "--workers", type=int, default=0, help="twistreg --workers (default 0: serve in-process)"
    )
    p.add_argument(
        "--reference-workers",
        type=int,
        help="gunicorn workers of the reference (default: twistreg's, at least 1)",
    )
    p.add_argument(
        "--storage", type=Path, help="where to make the temporary work dir (default: the temp dir)"
    )
    p.add_argument(
        "--seed-registry",
        type=Path,
        default=DEFAULT_SEED_REGISTRY,
        help="path of shared/tools/seed-registry",
    )
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.duration < 1 or args.repeat < 1:
        p.error("--duration and --repeat must be at least 1")
    if args.reference_workers is None:
        args.reference_workers = max(args.workers, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run everything asked for in one work dir, removed at the end whatever happens."""
    args = parse_args(argv)
    missing = [tool for tool in ("wrk", "curl") if shutil.which(tool) is None]
    if missing:
        print(
            f"missing: {', '.join(missing)}; install with: apt-get install -y {' '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="twistreg-bench-", dir=args.storage))
    try:
        if not args.reference_only:
            why = check_twistreg_installed(workdir)
            if why:
                print(why, file=sys.stderr)
                return 2
        (workdir / "report.lua").write_text(WRK_REPORT_LUA)
        layer = workdir / "layer.bin"
        print(
            f"writing the {args.layer_size // MIB} MiB layer and measuring baselines in {workdir}",
            file=sys.stderr,
        )
        ids = layer_ids(args.repeat)
        checksums = make_layer(layer, args.layer_size, [i for v in ids.values() for i in v])
        base_runs = baselines(workdir, layer, args.layer_size, args.repeat)
        plan = Plan(workdir, layer, args.layer_size, args.duration, ids, checksums, base_runs)
        results = []
        if not args.reference_only:
            r = ServerResult("twistreg", twistreg_processes(args.workers))
            print("benchmarking twistreg", file=sys.stderr)
            start = partial(start_twistreg, workdir, args.workers)
            bench_server(r, start, plan)
            results.append(r)
        if not args.twistreg_only:
            r = ServerResult("reference", reference_processes(args.reference_workers))
            print("benchmarking the reference", file=sys.stderr)
            start = partial(start_reference, workdir, args.reference_workers, args.seed_registry)
            bench_server(r, start, plan)
            results.append(r)
        meta: dict[str, object] = {
            "cpus": os.cpu_count(),
            "layer_mib": args.layer_size // MIB,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "storage": str(workdir),
            "filesystem": filesystem_of(workdir),
        }
        print(render(results, plan, meta))
        if args.json:
            figures = {
                "meta": meta,
                "baselines": plan.base,
                "baseline_runs": base_runs,
                "servers": [dataclasses.asdict(r) for r in results],
            }
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 1 if any(r.reason and r.name == "twistreg" for r in results) else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
