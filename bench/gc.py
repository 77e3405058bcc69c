"""
Garbage collection over a large local tree while the registry serves: time, peak memory, and
request latency with and without a collection running.

    .venv/bin/python bench/gc.py [--images 10000] [--blobs 50000]

Builds a tree in a temporary directory (half of the V1 images and a fifth of the V2 manifests
unreached, everything two hours old), starts `twist twistreg --workers 2` on it, sends GETs
from 4 threads for a while without a collection, then while `python -m twistreg gc` runs,
and prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402
from twistreg import layout  # noqa: E402
from twistreg.oci.names import Digest  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYERS_PER_MANIFEST = 9


def write(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(root: Path, images: int, blobs: int) -> list[str]:
    """The tree; the paths of what stays, to GET."""
    targets = []
    for number in range(images):
        image_id = hashlib.sha256(b"image %d" % number).hexdigest()
        write(root, layout.image_json_key(image_id), json.dumps({"id": image_id}).encode())
        write(root, layout.image_ancestry_key(image_id), json.dumps([image_id]).encode())
        write(root, layout.image_layer_key(image_id), b"layer %d" % number)
        if number % 2 == 0:
            write(root, f"repositories/bench/v1/tag_t{number}", image_id.encode())
            targets.append(f"/v1/images/{image_id}/json")
    manifests = blobs // (LAYERS_PER_MANIFEST + 1)
    for number in range(manifests):
        name = f"bench/r{number % 50}"
        digests = []
        for part in range(LAYERS_PER_MANIFEST + 1):
            data = b"blob %d %d" % (number, part)
            digest = Digest.of(data)
            write(root, layout.blob_data_key(digest), data)
            write(root, layout.layer_link_key(name, digest), layout.link_content(digest))
            digests.append((str(digest), len(data)))
        (config, config_size), layers = digests[0], digests[1:]
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": d, "size": s} for d, s in layers]}).encode()
        digest = Digest.of(body)
        write(root, layout.blob_data_key(digest), body)
        write(root, layout.revision_link_key(name, digest), layout.link_content(digest))
        if number % 5:
            write(root, layout.v2_tag_current_key(name, f"t{number}"), layout.link_content(digest))
            targets.append(f"/v2/{name}/manifests/t{number}")
            targets.append(f"/v2/{name}/blobs/{layers[0][0]}")
    then = time.time() - 2 * 3600
    for directory, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(directory, name), (then, then))
    return targets


def load(port: int, targets: list[str], stop: threading.Event, out: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    index = 0
    while not stop.is_set():
        path = targets[index % len(targets)]
        index += 1
        started = time.perf_counter()
        connection.request("GET", path, headers={"Accept": OCI_MANIFEST})
        response = connection.getresponse()
        response.read()
        out.append((time.perf_counter() - started, response.status))


def measure(port: int, targets: list[str], during) -> dict:
    stop = threading.Event()
    samples: list = []
    threads = [threading.Thread(target=load, args=(port, targets[i::4], stop, samples))
               for i in range(4)]
    for thread in threads:
        thread.start()
    extra = during()
    stop.set()
    for thread in threads:
        thread.join()
    latencies = sorted(seconds for seconds, _ in samples)
    return {"requests": len(samples),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2),
            "5xx": sum(status >= 500 for _, status in samples), **extra}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--blobs", type=int, default=50000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "storage"
        started = time.time()
        targets = build(root, options.images, options.blobs)
        built = time.time() - started
        server = Server(Path(tmp), root, workers=2).start()
        try:
            server.wait_for_workers(2)
            baseline = measure(server.port, targets, lambda: time.sleep(15) or {})

            def collect() -> dict:
                env = dict(os.environ, PYTHONPATH=str(ROOT))
                config = Path(tmp) / "gc.yml"
                # Untagged manifests go after an hour here, to be part of what is removed.
                config.write_text("dev:\n  standalone: true\n  gc: {untagged: 3600}\n")
                before = time.perf_counter()
                result = subprocess.run(
                    [sys.executable, "-m", "twistreg", "gc", "--json", "--config", str(config),
                     "--storage-path", str(root)], capture_output=True, text=True, env=env,
                    cwd=tmp)
                assert result.returncode == 0, result.stderr
                peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                return {"gc_seconds": round(time.perf_counter() - before, 2),
                        "gc_peak_rss_mib": round(peak / 1024, 1),
                        "gc_report": json.loads(result.stdout)}

            during = measure(server.port, targets, collect)
        finally:
            server.stop()
    print(json.dumps({"images": options.images, "blobs": options.blobs,
                      "tree_seconds": round(built, 1), "without_gc": baseline,
                      "during_gc": during,
                      "p99_added_ms": round(during["p99_ms"] - baseline["p99_ms"], 2)},
                     indent=2))


if __name__ == "__main__":
    main()
