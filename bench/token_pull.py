#!/usr/bin/env python3
"""Token-mode pull of an image with 30 layers (issue 3): index round trips and time.

Starts a small index (the one the tests use) and two registries over one storage tree, one
standalone and one in token mode (`standalone: false`) pointing at that index, pushes an image
of --layers layers once, then pulls it --repeat times from each, docker 1.x style (tags,
ancestry, then json and layer of every image, with one token), alternating the two so machine
noise hits both alike. Reports the median pull time of each mode, their ratio, and how many
times the index was asked per pull (the token cache should make that one).

    python bench/token_pull.py
    python bench/token_pull.py --layers 30 --layer-size 1M --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402
from tests.stub_index import StubIndex  # noqa: E402
from twistreg.checksums import payload_checksum  # noqa: E402

TOKEN = 'Token signature=bench,repository="bench/image",access=read'


def image_ids(count: int) -> list[str]:
    return [f"{i:064x}" for i in range(1, count + 1)]


def push(registry: Server, ids: list[str], layer_size: int) -> None:
    """One image of len(ids) layers, each the child of the one before."""
    parent = None
    for image_id in ids:
        document = {"id": image_id, **({"parent": parent} if parent else {})}
        image_json = json.dumps(document).encode()
        layer = image_id.encode() * (layer_size // 64)
        assert registry.request("PUT", f"/v1/images/{image_id}/json", image_json).status == 200
        assert registry.request("PUT", f"/v1/images/{image_id}/layer", layer).status == 200
        checksum = payload_checksum(image_json, layer)
        answer = registry.request("PUT", f"/v1/images/{image_id}/checksum",
                                  headers={"X-Docker-Checksum-Payload": checksum})
        assert answer.status == 200
        parent = image_id
    tag = registry.request("PUT", "/v1/repositories/bench/image/tags/latest",
                           json.dumps(ids[-1]).encode())
    assert tag.status == 200


def pull(registry: Server, headers: dict) -> float:
    """A docker 1.x pull over one keep-alive connection; its duration in seconds."""
    started = time.perf_counter()
    connection = registry.connection()

    def get(path: str) -> bytes:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:200])
        return body

    tip = json.loads(get("/v1/repositories/bench/image/tags"))["latest"]
    for image_id in json.loads(get(f"/v1/images/{tip}/ancestry")):
        get(f"/v1/images/{image_id}/json")
        get(f"/v1/images/{image_id}/layer")
    connection.close()
    return time.perf_counter() - started


def main(options: argparse.Namespace) -> None:
    ids = image_ids(options.layers)
    index = StubIndex()
    index.valid = {"bench"}
    index.images = {"bench/image": ids}
    with tempfile.TemporaryDirectory(prefix="twistreg-bench-") as work:
        tmp = Path(work)
        storage = tmp / "storage"
        config = tmp / "token.yml"
        config.write_text(f"dev:\n  standalone: false\n  index_endpoint: {index.url}\n")
        standalone = Server(tmp / "standalone", storage)
        token = Server(tmp / "token", storage, "--config", str(config))
        for directory in ("standalone", "token"):
            (tmp / directory).mkdir()
        standalone.start()
        token.start()
        try:
            push(standalone, ids, options.layer_size)
            times: dict[str, list[float]] = {"standalone": [], "token": []}
            calls = []
            for _ in range(options.repeat):
                times["standalone"].append(pull(standalone, {}))
                before = len(index.calls)
                # A fresh token each round, as a new docker pull gets: the cache cannot help
                # across pulls, only within one.
                index.valid.add(f"bench{_}")
                headers = {"Authorization": TOKEN.replace("bench,", f"bench{_},")}
                times["token"].append(pull(token, headers))
                calls.append(len(index.calls) - before)
        finally:
            standalone.stop()
            token.stop()
            index.close()
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"pull of {options.layers} layers of {options.layer_size} bytes, "
          f"median of {options.repeat} (alternating)")
    print(f"  standalone  {median['standalone'] * 1000:8.1f} ms")
    print(f"  token mode  {median['token'] * 1000:8.1f} ms"
          f"   ({median['token'] / median['standalone']:.2f}x standalone)")
    print(f"  index round trips per token-mode pull: {sorted(set(calls))}"
          f" ({2 + 2 * options.layers} requests each)")


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--layer-size", type=lambda v: int(v.rstrip("Mm")) * 1024 * 1024
                        if v[-1] in "Mm" else int(v), default=1024 * 1024,
                        help="bytes per layer, or N M for MiB (default 1M)")
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_options(sys.argv[1:]))
