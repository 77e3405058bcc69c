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

# Fixed ids, so the expected payload checksums are computed once while the layer file is made.
SMALL_ID = hashlib.sha256(b"twistreg-bench small").hexdigest()
CHUNKED_ID = hashlib.sha256(b"twistreg-bench chunked").hexdigest()
SIZED_ID = hashlib.sha256(b"twistreg-bench sized").hexdigest()
SMALL_LAYER = bytes(range(256)) * 4

ENDPOINTS = (
    ("GET /v1/_ping", "/v1/_ping"),
    ("GET /v1/images/<id>/json", f"/v1/images/{SMALL_ID}/json"),
)
TRANSFERS = ("PUT layer chunked", "PUT layer sized", "GET layer")

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
    """One wrk run: an endpoint at one concurrency."""

    endpoint: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclasses.dataclass
class Transfer:
    """One layer transfer; cpu_s and peak_rss_mib are the server tree's, not curl's."""

    mbps: float
    seconds: float
    cpu_s: float
    peak_rss_mib: float


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
class Server:
    """A running server. All its processes share the session whose leader is `session`."""

    name: str
    port: int
    session: int
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
    return json.dumps({"id": image_id}).encode()


def put_image_json(port: int, image_id: str) -> None:
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
    """sha256 primed with J + newline (V1-API.md §8); feed it the layer bytes."""
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
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- baselines ---------------------------------------------------------------------------------


def make_layer(path: Path, size: int) -> dict[str, str]:
    """Write the layer to PUT and return the payload checksum each large image will need."""
    block = os.urandom(MIB)
    hashers = {image_id: payload_hasher(image_id) for image_id in (CHUNKED_ID, SIZED_ID)}
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


def baselines(workdir: Path, layer: Path, size: int) -> dict[str, float]:
    """MB/s of plain dd (no fsync, like the servers) and cat of the warm layer file."""
    target = workdir / "dd.bin"
    os.sync()
    dd_s = timed(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size // MIB}"])
    target.unlink()
    cat_s = timed(["cat", str(layer)])
    return {"dd_write_mbps": size / dd_s / 1e6, "cat_read_mbps": size / cat_s / 1e6}


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
    return (
        f"docker-registry 0.9.1, gunicorn -k gevent -w {workers}: {_serving(workers)},"
        " plus the gunicorn master"
    )


def start_twistreg(workdir: Path, workers: int) -> Server:
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
    server = Server("twistreg", port, popen.pid, log, popen=popen)
    try:
        wait_ready(server)
    except BenchError:
        stop(server)
        raise
    return server


def start_reference(workdir: Path, workers: int, seed: Path) -> Server:
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
            r = run_wrk(server.port, path, connections, duration, script)
            points.append(
                HttpPoint(
                    endpoint,
                    connections,
                    r["requests"] / (r["duration_us"] / 1e6),
                    r["p50_us"] / 1000,
                    r["p99_us"] / 1000,
                    int(r["errors"]),
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
    return Transfer(size / float(seconds) / 1e6, float(seconds), cpu, rss.peak / MIB)


def measure_layers(
    server: Server, layer: Path, size: int, checksums: dict[str, str], workdir: Path
) -> dict[str, Transfer]:
    """Push two images as docker does (json, layer, checksum), one per body framing, pull one."""
    base = f"http://127.0.0.1:{server.port}/v1/images"
    answer = workdir / "answer.txt"
    results = {}
    for name, image_id, framing in (
        ("PUT layer chunked", CHUNKED_ID, ["-H", "Transfer-Encoding: chunked"]),
        ("PUT layer sized", SIZED_ID, []),
    ):
        put_image_json(server.port, image_id)
        args = [
            "-X",
            "PUT",
            "-T",
            str(layer),
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            *framing,
            "-o",
            str(answer),
            f"{base}/{image_id}/layer",
        ]
        results[name] = curl_transfer(server, args, size, "PUT")
        put_checksum(server.port, image_id, checksums[image_id])
    results["GET layer"] = curl_transfer(
        server, ["-o", os.devnull, f"{base}/{SIZED_ID}/layer"], size, "GET"
    )
    return results


def bench_server(
    result: ServerResult,
    start: Callable[[], Server],
    args: argparse.Namespace,
    workdir: Path,
    layer: Path,
    checksums: dict[str, str],
    base: dict[str, float],
) -> None:
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
            result.http = measure_http(server, args.duration, workdir / "report.lua")
            result.transfers = measure_layers(server, layer, args.layer_size, checksums, workdir)
        finally:
            stop(server)
    except BenchError as e:
        result.reason = str(e)
        return
    finally:
        shutil.rmtree(workdir / result.name, ignore_errors=True)  # frees disk and page cache
    t = result.transfers
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


def render(results: list[ServerResult], base: dict[str, float], meta: dict[str, object]) -> str:
    ok = [r for r in results if not r.reason]
    out = [
        f"twistreg bench: {meta['cpus']} CPUs, layer {meta['layer_mib']} MiB,"
        f" {meta['duration_s']} s per wrk point, storage {meta['storage']} ({meta['filesystem']})",
    ]
    out += [f"  {r.name}: {r.processes}" for r in results]
    out += [f"  {r.name} unavailable: {r.reason}" for r in results if r.reason]
    out.append(
        f"\nBaselines, same disk: dd write (no fsync) {base['dd_write_mbps']:.0f} MB/s,"
        f" cat read (warm cache) {base['cat_read_mbps']:.0f} MB/s"
    )
    if not ok:
        return "\n".join(out)
    header = ["request", "conc"]
    for r in ok:
        header += [f"{r.name} req/s", "p50 ms", "p99 ms", "err"]
    rows = []
    for i, (endpoint, connections) in enumerate((e, c) for e, _ in ENDPOINTS for c in CONCURRENCY):
        row = [endpoint, str(connections)]
        for r in ok:
            p = r.http[i]
            row += [f"{p.rps:.0f}", f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}", str(p.errors)]
        rows.append(row)
    out += ["\nRequests/s (wrk, keep-alive, 1 client thread)", table(header, rows)]
    header = ["transfer"]
    for r in ok:
        header += [f"{r.name} MB/s", "s", "srv CPU s", "peak RSS MiB"]
    rows = []
    for name in TRANSFERS:
        row = [name]
        for r in ok:
            t = r.transfers[name]
            row += [f"{t.mbps:.0f}", f"{t.seconds:.2f}", f"{t.cpu_s:.2f}", f"{t.peak_rss_mib:.1f}"]
        rows.append(row)
    rows.append(
        ["idle RSS MiB (after start)"]
        + sum(([f"{r.rss_idle_mib:.1f}", "", "", ""] for r in ok), [])
    )
    out += [
        f"\nLayer transfers ({meta['layer_mib']} MiB, curl; MB = 10^6 bytes)",
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
    if args.duration < 1:
        p.error("--duration must be at least 1 second")
    if args.reference_workers is None:
        args.reference_workers = max(args.workers, 1)
    return args


def main(argv: list[str] | None = None) -> int:
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
        checksums = make_layer(layer, args.layer_size)
        base = baselines(workdir, layer, args.layer_size)
        results = []
        if not args.reference_only:
            r = ServerResult("twistreg", twistreg_processes(args.workers))
            print("benchmarking twistreg", file=sys.stderr)
            start = partial(start_twistreg, workdir, args.workers)
            bench_server(r, start, args, workdir, layer, checksums, base)
            results.append(r)
        if not args.twistreg_only:
            r = ServerResult("reference", reference_processes(args.reference_workers))
            print("benchmarking the reference", file=sys.stderr)
            start = partial(start_reference, workdir, args.reference_workers, args.seed_registry)
            bench_server(r, start, args, workdir, layer, checksums, base)
            results.append(r)
        meta: dict[str, object] = {
            "cpus": os.cpu_count(),
            "layer_mib": args.layer_size // MIB,
            "duration_s": args.duration,
            "storage": str(workdir),
            "filesystem": filesystem_of(workdir),
        }
        print(render(results, base, meta))
        if args.json:
            figures = {
                "meta": meta,
                "baselines": base,
                "servers": [dataclasses.asdict(r) for r in results],
            }
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 1 if any(r.reason and r.name == "twistreg" for r in results) else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
