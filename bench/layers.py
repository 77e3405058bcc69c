#!/usr/bin/env python3
"""
Layers side by side with nginx, on the same file, in one run: GET (twistreg serving
C{/v1/images/<id>/layer} from local storage, nginx with C{sendfile on} serving the file of
that layer in the storage tree; whole and ranged) and PUT (a layer into twistreg, with its
checksum computed on the way, sized and chunked, against a WebDAV PUT of the same file into
nginx). MB/s and the server's CPU seconds per GiB, medians of alternating rounds.
bench/README.md tells how to run it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run as single  # noqa: E402

GIB = 1 << 30
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/client-body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /dav/ {{
            root {work};
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


def start_nginx(work: Path, root: Path) -> single.Server:
    """nginx serving C{root}, as any user, everything it writes in C{work}."""
    port = single.free_port()
    (work / "dav").mkdir()
    (work / "dav").chmod(0o777)  # its workers write there, as nobody when started as root
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, root=root))
    popen = subprocess.Popen(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf)], cwd=work,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)
    server = single.Server("nginx", port, popen.pid, root, work / "nginx-error.log", popen=popen)
    deadline = time.monotonic() + single.READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            single.http_request(port, "GET", "/")
            return server
        except OSError:
            time.sleep(0.05)
    single.stop(server)
    raise single.BenchError("nginx did not start: " + single.tail(work / "nginx-error.log"))


def get(server: single.Server, path: str, size: int, first: int | None) -> tuple[float, float]:
    """One GET to /dev/null: MB/s and the server's CPU seconds."""
    headers = [] if first is None else ["-H", f"Range: bytes={first}-"]
    expected = size - (first or 0)
    cpu = single.session_cpu(server.session)
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
         *headers, f"http://127.0.0.1:{server.port}{path}"],
        capture_output=True, text=True)
    cpu = single.session_cpu(server.session) - cpu
    status, downloaded, seconds = out.stdout.split()[-3:]
    if status not in ("200", "206") or int(downloaded) != expected:
        raise single.BenchError(f"{server.name} GET answered {status}, {downloaded} bytes")
    return expected / float(seconds) / 1e6, cpu * GIB / expected


def put(server: single.Server, path: str, layer: Path, size: int,
        chunked: bool) -> tuple[float, float]:
    """One PUT of the layer file: MB/s and the server's CPU seconds per GiB."""
    framing = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    cpu = single.session_cpu(server.session)
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-T", str(layer),
         *framing, f"http://127.0.0.1:{server.port}{path}"],
        capture_output=True, text=True)
    cpu = single.session_cpu(server.session) - cpu
    status, seconds = out.stdout.split()[-2:]
    if status not in ("200", "201", "204"):
        raise single.BenchError(f"{server.name} PUT answered {status}: {out.stderr.strip()}")
    return size / float(seconds) / 1e6, cpu * GIB / size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--layer-size", default="1G", help="e.g. 1G (default), 256M")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians count)")
    parser.add_argument("--workers", type=int, default=2, help="twistreg --workers")
    options = parser.parse_args(argv)
    size = single.parse_size(options.layer_size)
    for tool in ("curl", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench/layers.py: {tool} is missing", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="twistreg-bench-layers-"))
    work.chmod(0o755)  # nginx's workers run as nobody when started as root
    servers: list[single.Server] = []
    try:
        twistreg = single.start_twistreg(work, options.workers)
        servers.append(twistreg)
        image_id = single.layer_ids(1)["PUT layer sized"][0]
        layer = work / "layer"
        checksum = single.make_layer(layer, size, [image_id])[image_id]
        single.put_image_json(twistreg.port, image_id)
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-T", str(layer),
                        f"http://127.0.0.1:{twistreg.port}/v1/images/{image_id}/layer"],
                       check=True)
        single.put_checksum(twistreg.port, image_id, checksum)
        nginx = start_nginx(work, twistreg.storage)
        servers.append(nginx)
        paths = {twistreg.name: f"/v1/images/{image_id}/layer",
                 nginx.name: f"/images/{image_id}/layer"}
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(options.repeat):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for kind, first in (("GET whole", None), ("GET ranged", size // 3)):
                for server in order:
                    figures.setdefault((server.name, kind), []).append(
                        get(server, paths[server.name], size, first))
            for kind, chunked in (("PUT sized", False), ("PUT chunked", True)):
                for server in order:
                    if server is twistreg:
                        # A fresh image each time: a layer PUT needs its json, and a
                        # completed image cannot be pushed again.
                        target = hashlib.sha256(f"{kind} {round_}".encode()).hexdigest()
                        single.put_image_json(twistreg.port, target)
                        path = f"/v1/images/{target}/layer"
                    else:
                        path = f"/dav/{kind.replace(' ', '-')}-{round_}"
                    figures.setdefault((server.name, kind), []).append(
                        put(server, path, layer, size, chunked))
                    if server is nginx:
                        (work / path.lstrip("/")).unlink()
        print(f"layer of {size // (1 << 20)} MiB, twistreg --workers {options.workers}, "
              f"median of {options.repeat} rounds, order alternating")
        print(f"{'':11} {'twistreg MB/s':>14} {'nginx MB/s':>11} {'ratio':>6} "
              f"{'twistreg CPU s/GiB':>19} {'nginx CPU s/GiB':>16} {'ratio':>6}")
        for kind in ("GET whole", "GET ranged", "PUT sized", "PUT chunked"):
            mine = figures[("twistreg", kind)]
            theirs = figures[("nginx", kind)]
            speed = [statistics.median(run[0] for run in runs) for runs in (mine, theirs)]
            cpu = [statistics.median(run[1] for run in runs) for runs in (mine, theirs)]
            print(f"{kind:11} {speed[0]:14.0f} {speed[1]:11.0f} {speed[0] / speed[1]:6.2f} "
                  f"{cpu[0]:19.2f} {cpu[1]:16.2f} {cpu[0] / max(cpu[1], 0.01):6.2f}")
    except single.BenchError as error:
        print(f"bench/layers.py: {error}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            single.stop(server)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
