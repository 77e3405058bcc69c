"""
What the metrics cost a request: server CPU per `GET /v1/_ping` with `metrics.enabled` off and
on, measured as `run.py` measures it (wrk, keep-alive, CPU of every process of the server's
session divided by the requests completed), the two configurations alternating so that a
drift of the machine hits both alike.

    python bench/metrics.py [--workers 0] [--runs 5] [--duration 5] [--connections 10]

Needs wrk and twistreg installed in the interpreter that runs it (see README.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import run  # bench/run.py, beside this file

METRICS_ON = "  metrics:\n    enabled: true\n"


def start(workdir: Path, workers: int, metrics: bool) -> run.Server:
    """run.py's twistreg, with the metrics keys added to its config when asked."""
    plain = run.registry_config
    if metrics:
        # start_twistreg writes its config with this function: the same server, metrics on.
        run.registry_config = lambda storage: plain(storage) + METRICS_ON
    try:
        return run.start_twistreg(workdir, workers)
    finally:
        run.registry_config = plain


def cpu_per_request(server: run.Server, script: Path, connections: int, duration: int
                    ) -> float:
    """Microseconds of server CPU per request over one wrk run."""
    before = run.session_cpu(server.session)
    report = run.run_wrk(server.port, "/v1/_ping", connections, duration, script)
    return (run.session_cpu(server.session) - before) / report["requests"] * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--runs", type=int, default=5, help="wrk runs per configuration")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=10)
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("missing: wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="twistreg-bench-metrics-"))
    try:
        why = run.check_twistreg_installed(workdir)
        if why:
            print(why, file=sys.stderr)
            return 2
        script = workdir / "report.lua"
        script.write_text(run.WRK_REPORT_LUA)
        servers = {}
        for on in (False, True):
            (workdir / ("on" if on else "off")).mkdir()
            servers[on] = start(workdir / ("on" if on else "off"), args.workers, on)
        try:
            figures: dict[bool, list[float]] = {False: [], True: []}
            for on in (False, True):
                run.run_wrk(servers[on].port, "/v1/_ping", args.connections, run.WARMUP_S,
                            script)
            for _ in range(args.runs):
                for on in (False, True):
                    figures[on].append(cpu_per_request(servers[on], script, args.connections,
                                                       args.duration))
        finally:
            for server in servers.values():
                run.stop(server)
        off, on = (statistics.median(figures[k]) for k in (False, True))
        print(f"GET /v1/_ping, --workers {args.workers}, {args.connections} connections,"
              f" {args.runs} runs of {args.duration} s each, server CPU us/request:")
        for label, key in (("metrics off", False), ("metrics on", True)):
            runs = ", ".join(f"{value:.1f}" for value in figures[key])
            print(f"  {label:11}  median {statistics.median(figures[key]):6.1f}   ({runs})")
        print(f"  overhead     {on - off:+.1f} us ({(on - off) / off * 100:+.1f} %)")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
