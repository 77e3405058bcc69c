#!/usr/bin/env python3
"""Process-pool benchmark: twistreg with --workers 1 and --workers 2, in one run.

Measures small-request throughput (wrk, keep-alive, 1 client thread) of GET /v1/_ping and
GET /v1/images/<id>/json with each pool size and the scaling ratio between them (both
servers run at once and their wrk runs alternate, so that noise from the machine hits both
alike; the median of --repeat runs counts), how the load splits over the workers (CPU
seconds each worker used, and requests each served over the server's life), and layer
PUT/GET throughput with 4 parallel curl clients.

It runs the source tree it sits in (a drop-in plugin directory on PYTHONPATH, as the tests
do), needs wrk and curl, and writes its work files under --storage (default: a temp dir):

    /tmp/venv/bin/python bench/pool.py                       # ~2 minutes
    /tmp/venv/bin/python bench/pool.py --duration 2 --layer-size 64M --json pool.json

Exit status: 0 when everything ran and the 2-worker small-request rate is at least
--min-ratio (1.6) times the 1-worker rate, 1 otherwise, 2 when wrk or curl is missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twistreg.checksums import PayloadHasher  # noqa: E402

MIB = 1 << 20
IMAGE = hashlib.sha256(b"twistreg-bench pool small").hexdigest()
ENDPOINTS = (("GET /v1/_ping", "/v1/_ping"), ("GET image json", f"/v1/images/{IMAGE}/json"))
CONFIG = "bench:\n  standalone: true\n  loglevel: warning\n  debug: false\n"
CLIENTS = 4
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"""
_SERVING = re.compile(r"twistreg serving .* on 127\.0\.0\.1:(\d+)")
_READY = re.compile(r"worker (\d+) ready")
_EXITED = re.compile(r"worker (\d+) exited after (\d+) requests")


class Pool:
    """C{twist twistreg --workers N} from this source tree, in a session of its own."""

    def __init__(self, work: Path, workers: int) -> None:
        self.work = work
        self.workers = workers
        self.storage = work / f"storage-{workers}"
        self.log = work / f"server-{workers}.log"
        self.port = 0
        self.pids: list[int] = []
        self._process: subprocess.Popen | None = None

    def start(self) -> Pool:
        plugins = self.work / "plugins" / "twisted" / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "twistreg_plugin.py"
        if not link.exists():
            link.symlink_to(ROOT / "twisted_plugins" / "twistreg_plugin.py")
        config = self.work / "config.yml"
        config.write_text(CONFIG)
        self.storage.mkdir()
        env = dict(os.environ, PYTHONPATH=f"{self.work / 'plugins'}{os.pathsep}{ROOT}",
                   PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "twisted", "--log-level", "info", "twistreg",
                   "--config", str(config), "--flavor", "bench",
                   "--listen", "tcp:0:interface=127.0.0.1", "--storage-path", str(self.storage),
                   "--workers", str(self.workers)]
        self._process = subprocess.Popen(command, cwd=self.work, env=env,
                                         stdin=subprocess.DEVNULL, stdout=self.log.open("w"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_text()
            serving = _SERVING.search(text)
            ready = [int(pid) for pid in _READY.findall(text)]
            if serving and len(ready) >= self.workers:
                self.port, self.pids = int(serving.group(1)), ready[: self.workers]
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise SystemExit(f"server did not start:\n{self.log.read_text()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status

    def cpu_seconds(self) -> dict[int, float]:
        """utime + stime of each worker so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        result = {}
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            result[pid] = (int(fields[11]) + int(fields[12])) / ticks
        return result

    def stop(self) -> dict[int, int]:
        """SIGTERM, wait; the requests each worker served, from the master's log."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(60)
        finally:
            self.kill()
        return {int(pid): int(n) for pid, n in _EXITED.findall(self.log.read_text())}

    def kill(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()


def put_json(pool: Pool, image: str) -> bytes:
    """Start an image (R4's json); its json, for the payload checksum."""
    image_json = json.dumps({"id": image}).encode()
    status = pool.request("PUT", f"/v1/images/{image}/json", image_json,
                          {"Content-Type": "application/json"})
    assert status == 200, status
    return image_json


def checksum_headers(image_json: bytes, chunks) -> dict[str, str]:
    """R5's headers for a layer, so that a wrongly stored layer fails the run."""
    hasher = PayloadHasher(image_json)
    for chunk in chunks:
        hasher.update(chunk)
    return {"X-Docker-Checksum": "tarsum+sha256:bench",
            "X-Docker-Checksum-Payload": hasher.checksum()}


def file_chunks(path: Path):
    with path.open("rb") as f:
        while data := f.read(MIB):
            yield data


def wrk(pool: Pool, path: str, connections: int, duration: int, lua: Path) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(lua),
         pool.url(path)], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.split("BENCH ", 1)[1].splitlines()[0])
    report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
    return report


def curl_batch(commands: list[list[str]]) -> tuple[float, list[str]]:
    """Run curl commands in parallel: wall seconds and each one's C{-w} report."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as executor:
        outputs = list(executor.map(
            lambda c: subprocess.run(c, capture_output=True, text=True, check=True).stdout,
            commands))
    return time.monotonic() - started, outputs


def transfers(pool: Pool, layer: Path, size: int, round_: int) -> dict:
    """4 parallel chunked layer PUTs, then 4 parallel GETs of them: aggregate MB/s."""
    images = [hashlib.sha256(f"bench {pool.workers} {round_} {i}".encode()).hexdigest()
              for i in range(CLIENTS)]
    checksums = [checksum_headers(put_json(pool, image), file_chunks(layer)) for image in images]
    put = [["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
            "-H", "Expect:", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{layer}",
            pool.url(f"/v1/images/{image}/layer")] for image in images]
    subprocess.run(["sync"], check=False)
    put_seconds, codes = curl_batch(put)
    assert codes == ["200"] * CLIENTS, codes
    for image, headers in zip(images, checksums):
        assert pool.request("PUT", f"/v1/images/{image}/checksum", headers=headers) == 200, image
    get = [["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
            pool.url(f"/v1/images/{image}/layer")] for image in images]
    get_seconds, reports = curl_batch(get)
    assert all(r == f"200 {size}" for r in reports), reports
    total = CLIENTS * size
    return {"put_mb_s": total / put_seconds / 1e6, "get_mb_s": total / get_seconds / 1e6}


def seed(pool: Pool) -> None:
    """The small image the json endpoint reads."""
    small = bytes(range(256)) * 4
    headers = checksum_headers(put_json(pool, IMAGE), [small])
    assert pool.request("PUT", f"/v1/images/{IMAGE}/layer", small) == 200
    assert pool.request("PUT", f"/v1/images/{IMAGE}/checksum", headers=headers) == 200


def measure(work: Path, args, lua: Path, layer: Path, size: int) -> list[dict]:
    """
    Both pools run side by side; their wrk points alternate, C{--repeat} times each, so that
    noise from the machine hits both alike. The median of each is kept.
    """
    pools = [Pool(work, 1).start()]
    results = [{"workers": 1, "points": []}, {"workers": 2, "points": []}]
    try:
        pools.append(Pool(work, 2).start())
        for pool, result in zip(pools, results):
            result["pids"] = pool.pids
            seed(pool)
        for name, path in ENDPOINTS:
            for pool in pools:
                wrk(pool, path, 10, 1, lua)  # warm-up
            for connections in args.connections:
                runs: list[list[dict]] = [[], []]
                for _ in range(args.repeat):
                    for pool, points in zip(pools, runs):
                        before = pool.cpu_seconds()
                        point = wrk(pool, path, connections, args.duration, lua)
                        after = pool.cpu_seconds()
                        point["cpu"] = {pid: after[pid] - before[pid] for pid in pool.pids}
                        points.append(point)
                for result, points in zip(results, runs):
                    rps = sorted(p["rps"] for p in points)
                    cpu = {pid: round(sum(p["cpu"][pid] for p in points), 2)
                           for pid in points[0]["cpu"]}
                    result["points"].append({
                        "endpoint": name, "connections": connections,
                        "rps": rps[len(rps) // 2], "runs": [round(r) for r in rps],
                        "errors": sum(p["errors"] for p in points), "cpu": cpu,
                    })
        rounds: list[list[dict]] = [[], []]
        for round_ in range(args.repeat):
            for pool, done in zip(pools, rounds):
                done.append(transfers(pool, layer, size, round_))
        for result, done in zip(results, rounds):
            result["transfers"] = {
                key: sorted(d[key] for d in done)[len(done) // 2] for key in done[0]}
            result["transfer_runs"] = {key: [round(d[key]) for d in done] for key in done[0]}
    finally:
        for pool, result in zip(pools, results):
            result["served"] = pool.stop()
            shutil.rmtree(pool.storage, ignore_errors=True)
    return results


def split(values: list[float]) -> str:
    total = sum(values) or 1
    return "/".join(f"{100 * v / total:.0f}" for v in values)


def report(results: list[dict], min_ratio: float) -> bool:
    one, two = results
    print(f"\n{'endpoint':<16} {'conns':>5} {'1 worker':>10} {'2 workers':>10} {'ratio':>6}"
          f"  {'errors':>6}  CPU split (2 workers)  runs (1 | 2 workers)")
    ok = True
    for p1, p2 in zip(one["points"], two["points"]):
        ratio = p2["rps"] / p1["rps"]
        ok = ok and ratio >= min_ratio and p1["errors"] == p2["errors"] == 0
        errors = p1["errors"] + p2["errors"]
        cpu = split(list(p2["cpu"].values()))
        print(f"{p1['endpoint']:<16} {p1['connections']:>5} {p1['rps']:>10.0f}"
              f" {p2['rps']:>10.0f} {ratio:>6.2f}  {errors:>6}  {cpu:<21}  {p1['runs']} | "
              f"{p2['runs']}")
    print(f"\nrequests served per worker (2 workers, whole run): "
          f"{split(list(two['served'].values()))}  {two['served']}")
    print(f"\nlayers, {CLIENTS} parallel clients   {'1 worker':>10} {'2 workers':>10}"
          "  runs (1 | 2 workers)")
    for key, label in (("put_mb_s", "PUT (chunked) MB/s"), ("get_mb_s", "GET MB/s")):
        print(f"{label:<30} {one['transfers'][key]:>10.0f} {two['transfers'][key]:>10.0f}"
              f"  {one['transfer_runs'][key]} | {two['transfer_runs'][key]}")
    print(f"\nsmall-request scaling target: >= {min_ratio}x: {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="wrk runs per point and transfer rounds (the median counts)")
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--layer-size", default="256M", help="MiB per layer (64M, 1G)")
    parser.add_argument("--min-ratio", type=float, default=1.6)
    parser.add_argument("--storage", default=None, help="work directory parent")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install -y {tool})", file=sys.stderr)
            return 2
    text = args.layer_size.upper().rstrip("B")
    size = int(text[:-1]) * (1024 if text.endswith("G") else 1) if text[-1] in "MG" else int(text)
    size *= MIB
    work = Path(tempfile.mkdtemp(prefix="twistreg-bench-pool-", dir=args.storage))
    try:
        lua = work / "report.lua"
        lua.write_text(WRK_LUA)
        layer = work / "layer.bin"
        with layer.open("wb") as f:
            block = os.urandom(MIB)
            for _ in range(size // MIB):
                f.write(block)
        results = measure(work, args, lua, layer, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = report(results, args.min_ratio)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
