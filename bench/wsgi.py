#!/usr/bin/env python3
"""WSGI hosting benchmark: a trivial Flask endpoint under twistreg and under gunicorn.

Serves the same one-route Flask application with ``twist twistreg --wsgi`` and with
``gunicorn -k gevent``, the same number of worker processes each, both started at once, and
alternates wrk runs between them (keep-alive, one client thread; the median of --repeat runs
counts), so that noise from the machine hits both alike. It reports requests/s, latency and
errors for each, and the twistreg/gunicorn ratio.

Both run in the benchmark's own virtualenv (--venv, made on first use): Flask, gunicorn,
gevent and twistreg's dependencies, so that both servers run the same Flask. twistreg itself
is this source tree (a drop-in plugin directory on PYTHONPATH, as the tests do). It needs wrk:

    python3 bench/wsgi.py                          # ~1 minute
    python3 bench/wsgi.py --workers 1 2 --connections 10 100 --json wsgi.json

Exit status: 0 when everything ran and twistreg's median is at least --min-ratio (1.0) times
gunicorn's at every point, 1 otherwise, 2 when wrk or the virtualenv is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(tempfile.gettempdir()) / "twistreg-bench-wsgi"
APP = '''\
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, World!"
'''
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "errors": %d, '
    .. '"p50_ms": %.2f, "p99_ms": %.2f}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
_READY = re.compile(r"worker (\d+) ready")


def ensure_venv(venv: Path) -> Path:
    """The benchmark's virtualenv, made on first use; its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} (flask, gunicorn, gevent, twistreg's dependencies) ...",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "flask", "gunicorn",
                        "gevent", str(ROOT)], check=True)
        # Its dependencies stay; twistreg itself runs from this source tree.
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "twistreg"],
                       check=True)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server in a session of its own, its output in a log file."""

    def __init__(self, name: str, work: Path, command: list[str], env: dict, port: int,
                 workers: int) -> None:
        self.name = name
        self.port = port
        self.workers = workers
        self.log = work / f"{name}-{workers}.log"
        self._process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, ready) -> Server:
        """Wait until C{ready(log text)} holds and the root answers."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if ready(self.log.read_text()):
                try:
                    with urllib.request.urlopen(self.url(), timeout=5) as response:
                        if response.read() == b"Hello, World!":
                            return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise SystemExit(f"{self.name} did not start:\n{self.log.read_text()}")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()


def start_twistreg(python: Path, work: Path, workers: int, threads: int | None) -> Server:
    plugins = work / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "twistreg_plugin.py"
    if not link.exists():
        link.symlink_to(ROOT / "twisted_plugins" / "twistreg_plugin.py")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{work / 'plugins'}{os.pathsep}{ROOT}{os.pathsep}{work}",
               PYTHONUNBUFFERED="1")
    server = Server("twistreg", work, [
        str(python), "-m", "twisted", "--log-level", "info", "twistreg",
        "--wsgi", "bench_app:app", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--storage-path", str(work / "storage"), "--workers", str(workers),
        *(["--threads", str(threads)] if threads else []),
    ], env, port, workers)
    return server.wait_ready(lambda text: workers == 0 or len(_READY.findall(text)) >= workers)


def start_gunicorn(python: Path, work: Path, workers: int) -> Server:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(work))
    server = Server("gunicorn", work, [
        str(python), "-m", "gunicorn", "-k", "gevent", "-w", str(max(workers, 1)),
        "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench_app:app",
    ], env, port, workers)
    return server.wait_ready(lambda text: True)


def wrk(server: Server, connections: int, duration: int, lua: Path) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(lua),
         server.url()], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.split("BENCH ", 1)[1].splitlines()[0])
    report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
    return report


def measure(python: Path, work: Path, args, lua: Path, workers: int) -> list[dict]:
    """Both servers with C{workers} processes; wrk runs alternate between them."""
    servers = [start_twistreg(python, work, workers, args.threads)]
    try:
        servers.append(start_gunicorn(python, work, workers))
        for server in servers:
            wrk(server, 10, 1, lua)  # warm-up
        points = []
        for connections in args.connections:
            runs: list[list[dict]] = [[], []]
            for _ in range(args.repeat):
                for server, done in zip(servers, runs):
                    done.append(wrk(server, connections, args.duration, lua))
            point: dict = {"workers": workers, "connections": connections}
            for server, done in zip(servers, runs):
                median = sorted(done, key=lambda r: r["rps"])[len(done) // 2]
                point[server.name] = {
                    "rps": median["rps"], "p50_ms": median["p50_ms"], "p99_ms": median["p99_ms"],
                    "runs": sorted(round(r["rps"]) for r in done),
                    "errors": sum(r["errors"] for r in done),
                }
            point["ratio"] = point["twistreg"]["rps"] / point["gunicorn"]["rps"]
            points.append(point)
        return points
    finally:
        for server in servers:
            server.kill()


def report(points: list[dict], min_ratio: float) -> bool:
    print(f"\n{'workers':>7} {'conns':>5} {'twistreg':>9} {'gunicorn':>9} {'ratio':>6}"
          f"  {'p50/p99 ms twistreg':>20} {'gunicorn':>14}  errors  runs (twistreg | gunicorn)")
    ok = True
    for p in points:
        t, g = p["twistreg"], p["gunicorn"]
        ok = ok and p["ratio"] >= min_ratio and t["errors"] == g["errors"] == 0
        print(f"{p['workers']:>7} {p['connections']:>5} {t['rps']:>9.0f} {g['rps']:>9.0f}"
              f" {p['ratio']:>6.2f}  {t['p50_ms']:>9.2f}/{t['p99_ms']:<10.2f}"
              f" {g['p50_ms']:>6.2f}/{g['p99_ms']:<7.2f}  {t['errors'] + g['errors']:>6}"
              f"  {t['runs']} | {g['runs']}")
    print(f"\ntarget: twistreg >= {min_ratio}x gunicorn at every point: "
          f"{'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker processes of each server (both get the same)")
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per point (median)")
    parser.add_argument("--min-ratio", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="twistreg's --threads (default: its own default)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    try:
        python = ensure_venv(args.venv)
    except subprocess.CalledProcessError as error:
        print(f"cannot make the virtualenv {args.venv}: {error}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="twistreg-bench-wsgi-"))
    try:
        (work / "bench_app.py").write_text(APP)
        lua = work / "report.lua"
        lua.write_text(WRK_LUA)
        points = [p for workers in args.workers for p in measure(python, work, args, lua, workers)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = report(points, args.min_ratio)
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
