#!/usr/bin/env python3
"""One revision of twistreg against another, side by side in one run.

The rule for a change: small-request throughput (GET /v1/_ping and GET /v1/images/<id>/json,
requests/s with wrk) and layer throughput (PUT with a sized body and GET, MB/s with curl) stay
within --tolerance of the previous revision's. This machine is shared and noisy, so both
servers run at once and every measurement alternates between them (base then head, then head
then base, ...); the median of --repeat runs counts.

    .venv/bin/python bench/versus.py --base cc8ec61                  # head: this working tree
    .venv/bin/python bench/versus.py --base cc8ec61 --head HEAD --json versus.json
    .venv/bin/python bench/versus.py --base HEAD~1 --head-tree ../other --only layers --workers 0

A revision is exported with `git archive` into the work dir; each tree runs its own code
(a drop-in twisted/plugins folder on PYTHONPATH with the tree first, as tests/server.py and
bench/pool.py do) with the interpreter running this script. bench/README.md tells more.

Exit status: 0 when every head/base ratio is at least 1 - --tolerance, 1 when one is below it
or a run saw errors, 2 when a tool is missing or a tree cannot be run.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import pool  # noqa: E402
from bench import run as single  # noqa: E402

TOOLS = ("wrk", "curl", "git", "tar")
START_TIMEOUT_S = 60
WARMUP_S = 1
ENDPOINT_KEYS = {"ping": pool.ENDPOINTS[0], "json": pool.ENDPOINTS[1]}
PUT = "layer PUT (sized) MB/s"
GET = "layer GET MB/s"


class CannotMeasure(Exception):
    """A tree cannot be exported or run, or a measuring step failed: exit status 2."""


# --- trees ------------------------------------------------------------------------------------


class Tree:
    """A source tree to run: an exported revision, or a directory as it is."""

    def __init__(self, label: str, path: Path, source: str, commit: str | None = None) -> None:
        self.label = label
        self.path = path.resolve()
        self.source = source
        self.commit = commit

    def describe(self) -> str:
        return f"{self.label}: {self.source}"


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotMeasure(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def export(label: str, rev: str, work: Path) -> Tree:
    """`git archive REV | tar -x` into the work dir (removed with it)."""
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    subject = git("log", "-1", "--format=%h %s", commit)
    into = work / f"tree-{label}"
    into.mkdir()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE)
    try:
        unpacked = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout)
    finally:
        assert archive.stdout is not None
        archive.stdout.close()
        archived = archive.wait()
    if archived or unpacked.returncode:
        raise CannotMeasure(f"could not export {rev} with git archive")
    return Tree(label, into, f"{rev} = {subject[:70]}", commit)


def directory(label: str, path: Path) -> Tree:
    if not (path / "twisted_plugins" / "twistreg_plugin.py").is_file():
        raise CannotMeasure(f"{path} is not a twistreg source tree")
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    note = f" (HEAD {commit[:7]} and any uncommitted edits)" if commit else ""
    return Tree(label, path, f"directory {path}{note}", commit)


def parse_requirement(text: str):
    """A packaging Requirement (version and marker), or None without packaging."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    return Requirement(text)


def missing_dependencies(tree: Tree) -> list[str]:
    """What the tree's pyproject.toml requires and this interpreter does not have."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: not checked
        return []
    try:
        requires = tomllib.loads((tree.path / "pyproject.toml").read_text())["project"].get(
            "dependencies", [])
    except (OSError, KeyError, ValueError):
        return []
    missing = []
    for text in requires:
        name = re.match(r"[A-Za-z0-9._-]+", text)
        if name is None:
            continue
        requirement = parse_requirement(text)
        if requirement and requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(name.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if requirement and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{text} ({installed} installed)")
    return missing


# --- servers ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the server's master: SIGTERM when this script dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TreeServer(pool.Pool):
    """
    pool.Pool's server, run from a given tree instead of the one pool.py sits in. Pool.start
    links ROOT's plugin and names its files by the worker count (both servers have the same
    count here), so start is new; url, request, stop and kill are Pool's.
    """

    def __init__(self, tree: Tree, work: Path, workers: int) -> None:
        super().__init__(work, workers)
        self.tree = tree
        self.home = work / tree.label
        self.storage = self.home / "storage"
        self.log = self.home / "server.log"
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        dropin = self.home / "plugins"
        (dropin / "twisted" / "plugins").mkdir(parents=True)
        (dropin / "twisted" / "plugins" / "twistreg_plugin.py").symlink_to(
            self.tree.path / "twisted_plugins" / "twistreg_plugin.py")
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([str(dropin), str(self.tree.path)]))
        for name in ("DOCKER_REGISTRY_CONFIG", "SETTINGS_FLAVOR", "PYTHONHOME"):
            env.pop(name, None)
        return env

    def check_code(self) -> None:
        """The interpreter, with this environment, imports twistreg and its plugin from the tree."""
        probe = subprocess.run(
            [sys.executable, "-c", "import os, twistreg, twisted.plugins.twistreg_plugin as p;"
             " print(twistreg.__file__); print(os.path.realpath(p.__file__))"],
            cwd=self.home, env=self.env, capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            raise CannotMeasure(f"{self.tree.label} tree cannot be imported: {last}")
        for found in probe.stdout.split():
            if not Path(found).resolve().is_relative_to(self.tree.path):
                raise CannotMeasure(f"{self.tree.label} runs {found}, not its tree's code")

    def start(self) -> TreeServer:
        config = self.home / "config.yml"
        config.write_text(pool.CONFIG)
        self.storage.mkdir()
        argv = [sys.executable, "-m", "twisted", "--log-level", "info", "twistreg",
                "--config", str(config), "--flavor", "bench", "--storage-path", str(self.storage),
                "--listen", "tcp:0:interface=127.0.0.1", "--workers", str(self.workers)]
        with self.log.open("w") as output:
            self._process = subprocess.Popen(
                argv, cwd=self.home, env=self.env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        give_up = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < give_up and self._process.poll() is None:
            text = self.log.read_text(errors="replace")
            port = pool._SERVING.search(text)
            ready = pool._READY.findall(text)
            if port and len(ready) >= self.workers:
                self.port = int(port.group(1))
                self.pids = [int(pid) for pid in ready[: self.workers]]
                return self
            time.sleep(0.05)
        self.kill()
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        raise CannotMeasure(f"the {self.tree.label} server did not start:\n{tail}")

    @property
    def session(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def started(self) -> bool:
        return self._process is not None and self._process.poll() is None


def alternate(servers: list[TreeServer], round_: int) -> list[TreeServer]:
    """A B, then B A, ...: what drifts during a round hits both servers alike."""
    return servers if round_ % 2 == 0 else servers[::-1]


# --- small requests ---------------------------------------------------------------------------


def small_requests(servers: list[TreeServer], args, lua: Path) -> list[dict]:
    """wrk points of each endpoint at each connection count, alternating servers."""
    points = []
    for key in args.only:
        if key not in ENDPOINT_KEYS:
            continue
        name, path = ENDPOINT_KEYS[key]
        for server in servers:
            pool.wrk(server, path, 10, WARMUP_S, lua)
        for connections in args.connections:
            runs: dict[str, list[dict]] = {s.tree.label: [] for s in servers}
            for round_ in range(args.repeat):
                for server in alternate(servers, round_):
                    cpu = single.session_cpu(server.session)
                    report = pool.wrk(server, path, connections, args.duration, lua)
                    report["cpu_s"] = single.session_cpu(server.session) - cpu
                    runs[server.tree.label].append(report)
            point = {"metric": f"{name} req/s, {connections} conns", "kind": "rps",
                     "endpoint": name, "connections": connections}
            for label, reports in runs.items():
                point[label] = {
                    "median": statistics.median(r["rps"] for r in reports),
                    "runs": [round(r["rps"]) for r in reports],
                    "errors": sum(r["errors"] for r in reports),
                    "p50_ms": statistics.median(r["p50_us"] for r in reports) / 1000,
                    "p99_ms": statistics.median(r["p99_us"] for r in reports) / 1000,
                    "cpu_us_per_request": 1e6 * sum(r["cpu_s"] for r in reports)
                    / max(1, sum(r["requests"] for r in reports)),
                }
            points.append(point)
            print(f"  {point['metric']}: " + ", ".join(
                f"{label} {point[label]['median']:.0f}" for label in runs), file=sys.stderr)
    return points


# --- layers -----------------------------------------------------------------------------------


def write_layer(path: Path, size: int) -> str:
    """A random MiB repeated to the size; the sha256 of the whole, to check pulls against."""
    digest = hashlib.sha256()
    chunk = os.urandom(pool.MIB)
    with path.open("wb") as out:
        for _ in range(size // pool.MIB):
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def curl_all(commands: list[list[str]], timeout: float) -> tuple[float, list[str]]:
    """
    pool.curl_batch with a deadline, and every curl killed when one fails, times out or on
    Ctrl-C (curl_batch's threads would wait for their transfers): wall seconds, -w reports.
    """
    started = time.monotonic()
    running: list[subprocess.Popen] = []
    try:
        for command in commands:
            running.append(subprocess.Popen(command, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))
        reports = []
        for process in running:
            out, err = process.communicate(timeout=max(1.0, started + timeout - time.monotonic()))
            if process.returncode:
                raise CannotMeasure(f"curl exited {process.returncode}: {err.strip()}")
            reports.append(out)
        return time.monotonic() - started, reports
    except subprocess.TimeoutExpired:
        raise CannotMeasure(f"a layer transfer took more than {timeout:.0f} s") from None
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
            process.wait()


def pull_digest(server: TreeServer, image: str) -> str:
    """sha256 of a layer as the server sends it (untimed)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("GET", f"/v1/images/{image}/layer")
        response = connection.getresponse()
        digest = hashlib.sha256()
        while data := response.read(pool.MIB):
            digest.update(data)
        return digest.hexdigest() if response.status == 200 else f"status {response.status}"
    finally:
        connection.close()


def forget(server: TreeServer, images: list[str]) -> None:
    """Remove a round's images from storage, so that every round writes into the same memory."""
    for image in images:
        for path in list(server.storage.rglob(image)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def layer_round(server: TreeServer, args, layer: Path, digest: str, round_: int) -> dict:
    """--clients parallel PUTs of the layer (Content-Length), then as many GETs: MB/s each."""
    size = args.layer_size
    timeout = max(120.0, 2 * size / pool.MIB)  # 0.5 MiB/s per client at worst
    images = [hashlib.sha256(f"versus {server.tree.label} {round_} {i}".encode()).hexdigest()
              for i in range(args.clients)]
    checksums = [pool.checksum_headers(pool.put_json(server, image), pool.file_chunks(layer))
                 for image in images]
    curl = ["curl", "-sS", "-o", "/dev/null", "--max-time", f"{timeout:.0f}"]
    puts = [curl + ["-w", "%{http_code} %{size_upload}", "-H", "Expect:",
                    "-H", "Content-Type: application/octet-stream", "-T", str(layer),
                    server.url(f"/v1/images/{image}/layer")] for image in images]
    gets = [curl + ["-w", "%{http_code} %{size_download}", server.url(f"/v1/images/{image}/layer")]
            for image in images]
    result: dict[str, float] = {}
    os.sync()
    for metric, commands in ((PUT, puts), (GET, gets)):
        cpu = single.session_cpu(server.session)
        with single.PeakRss(server.session) as rss:
            seconds, reports = curl_all(commands, timeout)
        result[f"{metric} cpu_s"] = single.session_cpu(server.session) - cpu
        result[f"{metric} rss_mib"] = rss.peak / pool.MIB
        if reports != [f"200 {size}"] * len(images):
            raise CannotMeasure(f"{server.tree.label}: {metric}: curl reported {reports}")
        result[metric] = len(images) * size / seconds / 1e6
        if metric == PUT:
            for image, headers in zip(images, checksums):
                status = server.request("PUT", f"/v1/images/{image}/checksum", headers=headers)
                if status != 200:
                    raise CannotMeasure(f"{server.tree.label}: the layer of {image[:12]} was"
                                        f" stored or hashed wrongly (checksum PUT: {status})")
    if round_ == 0:
        got = pull_digest(server, images[0])
        if got != digest:
            raise CannotMeasure(f"{server.tree.label}: a pulled layer differs from the pushed"
                                f" one ({got})")
    forget(server, images)
    return result


def layers(servers: list[TreeServer], args, layer: Path, digest: str) -> list[dict]:
    rounds: dict[str, list[dict]] = {s.tree.label: [] for s in servers}
    for round_ in range(args.repeat):
        for server in alternate(servers, round_):
            rounds[server.tree.label].append(layer_round(server, args, layer, digest, round_))
        print(f"  layer round {round_ + 1}/{args.repeat}: " + ", ".join(
            f"{label} PUT {done[-1][PUT]:.0f} GET {done[-1][GET]:.0f} MB/s"
            for label, done in rounds.items()), file=sys.stderr)
    points = []
    for metric in (PUT, GET):
        point = {"metric": f"{metric}, {args.clients} client{'s' * (args.clients > 1)}",
                 "kind": "mb_s", "clients": args.clients, "layer_mib": args.layer_size // pool.MIB}
        for label, done in rounds.items():
            point[label] = {
                "median": statistics.median(d[metric] for d in done),
                "runs": [round(d[metric]) for d in done],
                "errors": 0,
                "cpu_s_per_gb": statistics.median(
                    d[f"{metric} cpu_s"] / (args.clients * args.layer_size / 1e9) for d in done),
                "peak_rss_mib": max(d[f"{metric} rss_mib"] for d in done),
            }
        points.append(point)
    return points


# --- report -----------------------------------------------------------------------------------


def judge(points: list[dict], tolerance: float) -> list[str]:
    """The metrics that fail the rule, each with why; also sets every point's ratio."""
    failing = []
    for point in points:
        point["ratio"] = point["head"]["median"] / point["base"]["median"]
        # The same round's runs were next to each other in time: their ratios, a second view
        # of the noise (not judged).
        point["paired_ratios"] = [round(h / b, 3) for b, h in
                                  zip(point["base"]["runs"], point["head"]["runs"])]
        errors = point["base"]["errors"] + point["head"]["errors"]
        if point["ratio"] < 1 - tolerance:
            failing.append(f"{point['metric']} ({point['ratio']:.3f})")
        elif errors:
            failing.append(f"{point['metric']} ({errors} errors)")
    return failing


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [header, *rows])


def render(points: list[dict], served: dict, meta: dict, failing: list[str]) -> str:
    out = [f"\n{meta['base']}\n{meta['head']}",
           f"--workers {meta['workers']}, wrk {meta['duration_s']} s x {meta['repeat']} per"
           f" point (1 client thread, keep-alive), layers {meta['layer_mib']} MiB x"
           f" {meta['clients']} parallel curl x {meta['repeat']} rounds, {meta['cpus']} CPUs,"
           f" {sys.executable}"]
    out += [f"note: {note}" for note in meta["notes"]]
    rows = []
    for p in points:
        rows.append([p["metric"], f"{p['base']['median']:.0f}", f"{p['head']['median']:.0f}",
                     f"{p['ratio']:.3f}", f"{statistics.median(p['paired_ratios']):.3f}",
                     f"{min(p['paired_ratios']):.2f}-{max(p['paired_ratios']):.2f}",
                     str(p["base"]["errors"] + p["head"]["errors"]),
                     f"{p['base']['runs']} | {p['head']['runs']}"])
    out += ["", table(["metric (median)", "base", "head", "head/base", "paired", "range",
                       "errors", "runs: base | head"], rows),
            "(head/base: ratio of the medians, judged; paired: median and range of each"
            " round's head/base, not judged)"]
    rows = []
    for p in points:
        if p["kind"] == "rps":
            for key, label, form in (("cpu_us_per_request", "server CPU us/request", "{:.0f}"),
                                     ("p99_ms", "p99 latency ms", "{:.2f}")):
                rows.append([f"{p['metric'].replace(' req/s', '')}: {label}",
                             form.format(p["base"][key]), form.format(p["head"][key]),
                             f"{p['head'][key] / max(p['base'][key], 1e-9):.3f}"])
        else:
            for key, label, form in (("cpu_s_per_gb", "server CPU s/GB", "{:.2f}"),
                                     ("peak_rss_mib", "peak RSS MiB (all processes)", "{:.0f}")):
                rows.append([f"{p['metric'].split(' MB/s')[0]}: {label}",
                             form.format(p["base"][key]), form.format(p["head"][key]),
                             f"{p['head'][key] / max(p['base'][key], 1e-9):.3f}"])
    if any(served.values()):
        rows.append(["requests served per worker, %"] + [
            pool.split(list(served.get(label, {}).values())) for label in ("base", "head")] + [""])
    if rows:
        out += ["", "also measured, not judged (lower is better)",
                table(["", "base", "head", "head/base"], rows)]
    out.append(f"\nrun took {meta['elapsed_s']:.0f} s")
    bound = 1 - meta["tolerance"]
    if failing:
        out.append(f"NOT within tolerance: below {bound:.2f} x base or with errors: "
                   + "; ".join(failing))
    else:
        out.append(f"within tolerance: every head/base ratio >= {bound:.2f}"
                   f" ({len(points)} metrics)")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="revision to compare against (git rev)")
    head = p.add_mutually_exclusive_group()
    head.add_argument("--head", help="revision to measure (default: the working tree)")
    head.add_argument("--head-tree", type=Path, help="source tree to measure as it is")
    p.add_argument("--workers", type=int, default=2, help="twistreg --workers of both")
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--repeat", type=int, default=5,
                   help="wrk runs per point and layer rounds per server; the median counts")
    p.add_argument("--connections", type=int, nargs="+", default=[10, 100])
    p.add_argument("--layer-size", type=single.parse_size, default=256 * pool.MIB,
                   help="whole MiB: 256M (default), 1G")
    p.add_argument("--clients", type=int, default=pool.CLIENTS,
                   help=f"parallel curl transfers per layer round (default {pool.CLIENTS})")
    p.add_argument("--only", nargs="+", choices=["ping", "json", "layers"],
                   default=["ping", "json", "layers"], help="measure only these")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="largest accepted loss, as a fraction of base (default 0.05)")
    p.add_argument("--storage", type=Path, help="parent of the work dir (default: the temp dir)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if min(args.duration, args.repeat, args.clients, *args.connections) < 1:
        p.error("--duration, --repeat, --clients and --connections must be at least 1")
    return args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install -y {' '.join(missing)})",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="twistreg-versus-", dir=args.storage))
    servers: list[TreeServer] = []
    served: dict[str, dict] = {}
    notes: list[str] = []
    try:
        trees = [export("base", args.base, work)]
        if args.head:
            trees.append(export("head", args.head, work))
        else:
            trees.append(directory("head", args.head_tree or ROOT))
        for tree in trees:
            notes += [f"{tree.label} declares {need}" for need in missing_dependencies(tree)]
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        servers = [TreeServer(tree, work, args.workers) for tree in trees]
        for server in servers:
            server.check_code()
            server.start()
            pool.seed(server)
        print(f"both servers up (ports {', '.join(str(s.port) for s in servers)});"
              f" measuring in {work}", file=sys.stderr)
        lua = work / "report.lua"
        lua.write_text(single.WRK_REPORT_LUA)
        points = small_requests(servers, args, lua)
        if "layers" in args.only:
            layer = work / "layer.bin"
            digest = write_layer(layer, args.layer_size)
            points += layers(servers, args, layer, digest)
    except (CannotMeasure, subprocess.CalledProcessError, AssertionError) as error:
        print(f"versus: cannot measure: {error!s}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("versus: interrupted; servers stopped, work dir removed", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            if server.started:
                served[server.tree.label] = server.stop()
            else:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)
    failing = judge(points, args.tolerance)
    meta = {
        "base": trees[0].describe(), "head": trees[1].describe(),
        "base_commit": trees[0].commit, "head_commit": trees[1].commit,
        "workers": args.workers, "duration_s": args.duration, "repeat": args.repeat,
        "connections": args.connections, "layer_mib": args.layer_size // pool.MIB,
        "clients": args.clients, "tolerance": args.tolerance, "cpus": os.cpu_count(),
        "python": sys.executable, "notes": notes, "elapsed_s": time.monotonic() - began,
    }
    print(render(points, served, meta, failing))
    if args.json:
        args.json.write_text(json.dumps(
            {"meta": meta, "metrics": points, "served_per_worker": served,
             "within_tolerance": not failing, "failing": failing}, indent=2) + "\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
