#!/usr/bin/env python3
"""The bridge between V1 and V2: how long making one view of a 30-layer image takes.

Two figures each way. In process, the making alone (the layer facts or the config known):
the manifest and config of a V1 image (`v1_to_v2.v2_image`), and the V1 images of a V2 image
(`v2_to_v1.v1_images`), median of --repeat runs. Over HTTP, against a running server on local
storage: the first request that makes the view (reading and storing what it needs), then the
median of later ones, which find it made.

    python bench/bridge.py
    python bench/bridge.py --layers 30 --repeat 200
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402
from tests.test_bridge_v1_to_v2 import push_v1, tar_of  # noqa: E402
from tests.test_bridge_v2_to_v1 import config_of, manifest_of  # noqa: E402
from twistreg.bridge.v1_to_v2 import v2_image  # noqa: E402
from twistreg.bridge.v2_to_v1 import v1_images  # noqa: E402
from twistreg.checksums import GZIP_LAYER, LayerFacts  # noqa: E402
from twistreg.oci.manifests import parse_manifest  # noqa: E402

DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = {"Accept": DOCKER}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layers(count: int) -> tuple[list[bytes], list[bytes]]:
    tars = [tar_of({f"layer/{i}": b"%d" % i * 100}) for i in range(count)]
    return tars, [gzip.compress(tar, mtime=0) for tar in tars]


def median_ms(make, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        make()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def in_process(count: int, repeat: int) -> tuple[float, float]:
    tars, gzips = layers(count)
    v1 = [({"id": f"{i:064x}", "created": "2024-01-01T00:00:00Z",
            "container_config": {"Cmd": ["/bin/sh", "-c", f"step {i}"]}},
           LayerFacts(sha256(layer), len(layer), "gzip", sha256(tar), GZIP_LAYER, False, None))
          for i, (tar, layer) in enumerate(zip(tars, gzips))]
    config = config_of(gzips, tars, history=[])
    manifest = parse_manifest(manifest_of(config, gzips), DOCKER)
    return (median_ms(lambda: v2_image(v1), repeat),
            median_ms(lambda: v1_images("bench/image", manifest, config), repeat))


def over_http(server: Server, count: int, repeat: int) -> dict[str, tuple[float, float]]:
    tars, gzips = layers(count)
    parent = None
    for i, layer in enumerate(gzips):
        image_id = f"{i + 1:064x}"
        push_v1(server, image_id, layer, parent, command=f"step {i}")
        parent = image_id
    assert server.request("PUT", "/v1/repositories/bench/old/tags/latest",
                          json.dumps(parent).encode()).status == 200
    config = config_of(gzips, tars, history=[])
    for blob in (*gzips, config):
        answer = server.request("POST", f"/v2/bench/new/blobs/uploads/?digest={sha256(blob)}",
                                blob, {"Content-Type": "application/octet-stream"})
        assert answer.status == 201, answer
    assert server.request("PUT", "/v2/bench/new/manifests/latest", manifest_of(config, gzips),
                          {"Content-Type": DOCKER}).status == 201
    found = {}
    for label, path, headers in (("V1 image over V2", "/v2/bench/old/manifests/latest", ACCEPT),
                                 ("V2 image over V1", "/v1/repositories/bench/new/tags", {})):
        times = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            answer = server.request("GET", path, headers=headers)
            times.append(time.perf_counter() - started)
            assert answer.status == 200, answer
        found[label] = (times[0] * 1000, statistics.median(times[1:]) * 1000)
    return found


def main(options: argparse.Namespace) -> None:
    to_v2, to_v1 = in_process(options.layers, options.repeat)
    print(f"making the view of a {options.layers}-layer image, in process "
          f"(median of {options.repeat})")
    print(f"  V1 image -> V2 manifest and config  {to_v2:8.3f} ms")
    print(f"  V2 image -> V1 images               {to_v1:8.3f} ms")
    with tempfile.TemporaryDirectory(prefix="twistreg-bench-") as work:
        tmp = Path(work)
        server = Server(tmp, tmp / "storage")
        server.start()
        try:
            found = over_http(server, options.layers, min(options.repeat, 50))
        finally:
            server.stop()
    print("over HTTP, local storage: the first request, then the median of later ones")
    for label, (first, later) in found.items():
        print(f"  {label:<20} {first:8.1f} ms first, {later:6.2f} ms later")


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_options(sys.argv[1:]))
