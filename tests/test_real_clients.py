"""
Published V1 clients against the real server: the PyPI C{docker-registry-client} (metadata
routes, tags) and the npm C{docker-registry-client} (reads with docker's token handshake,
layer streaming, search).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.backends import open_backend
from tests.test_push_pull import BASE, CHILD, make_layer, push_image

pytestmark = pytest.mark.integration

LAYERS = {BASE: make_layer({"a": b"base"}), CHILD: make_layer({"b": b"child" * 20000})}


@pytest.fixture(scope="module", params=["local", "s3"])
def pushed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    running = open_backend(request, request.param, tmp).server(tmp).start()
    push_image(running, BASE, json.dumps({"id": BASE}).encode(), LAYERS[BASE])
    push_image(running, CHILD, json.dumps({"id": CHILD, "parent": BASE}).encode(),
               LAYERS[CHILD])
    running.request("PUT", "/v1/repositories/foo/bar/tags/latest", json.dumps(CHILD).encode())
    running.request("PUT", "/v1/repositories/foo/bar/images",
                    json.dumps([{"id": BASE}, {"id": CHILD}]).encode())
    yield running
    running.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_pypi_client(pushed):
    client_module = pytest.importorskip("docker_registry_client")
    # Left to itself, the client would take V2: /v2/ answers beside V1.
    assert client_module.DockerRegistryClient(
        f"http://127.0.0.1:{pushed.port}").api_version == 2
    client = client_module.DockerRegistryClient(f"http://127.0.0.1:{pushed.port}",
                                                api_version=1)
    assert client.api_version == 1
    assert client.namespaces() == ["foo"]
    base = client._base_client
    assert base.get_repository_tags("foo", "bar") == {"latest": CHILD}
    assert base.get_image_id("foo", "bar", "latest") == CHILD
    assert base.get_image_ancestry(CHILD) == [CHILD, BASE]
    assert base.set_tag("foo", "bar", "v2", BASE)
    assert base.get_repository_tags("foo", "bar") == {"latest": CHILD, "v2": BASE}
    assert base.delete_repository_tag("foo", "bar", "v2")
    assert base.search("bar")["results"] == [{"description": "", "name": "foo/bar"}]


def npm_pull(directory: Path, port: int, repository: str, term: str) -> dict:
    """
    Pull the C{latest} tag of C{repository} with the npm client installed in C{directory},
    as docker 1.x did (image list, tags, ancestry, every layer), then search for C{term}:
    what it got, with the sha256 of each layer.
    """
    script = directory / "pull.js"
    script.write_text(textwrap.dedent(f"""
        var drc = require('docker-registry-client');
        var crypto = require('crypto');
        var log = require('bunyan').createLogger({{name: 'test', level: 'fatal'}});
        var client = drc.createClientV1({{name: '127.0.0.1:{port}/{repository}',
                                          insecure: true, log: log}});
        var out = {{layers: {{}}, json: {{}}}};
        function fail(err) {{ console.error(err.message); process.exit(1); }}
        client.listRepoImgs(function (err, imgs) {{
          if (err) return fail(err);
          out.images = imgs;
          client.listRepoTags(function (err, tags) {{
            if (err) return fail(err);
            out.tags = tags;
            client.getImgAncestry({{imgId: tags.latest}}, function (err, ancestry) {{
              if (err) return fail(err);
              out.ancestry = ancestry;
              var left = ancestry.length;
              ancestry.forEach(function (id) {{
                client.getImgJson({{imgId: id}}, function (err, json) {{
                  if (err) return fail(err);
                  out.json[id] = json;
                  client.getImgLayerStream({{imgId: id}}, function (err, stream) {{
                    if (err) return fail(err);
                    var hash = crypto.createHash('sha256');
                    stream.on('data', function (d) {{ hash.update(d); }});
                    stream.on('end', function () {{
                      out.layers[id] = hash.digest('hex');
                      if (--left === 0) client.search({{term: '{term}'}}, function (err, res) {{
                        if (err) return fail(err);
                        out.search = res;
                        console.log(JSON.stringify(out));
                        client.close();
                      }});
                    }});
                    stream.resume();
                  }});
                }});
              }});
            }});
          }});
        }});
    """))
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_npm_client_pull(pushed, npm_client):
    out = npm_pull(npm_client, pushed.port, "foo/bar", "bar")
    assert out["images"] == [{"id": BASE}, {"id": CHILD}]
    assert out["tags"] == {"latest": CHILD}
    assert out["ancestry"] == [CHILD, BASE]
    assert out["layers"] == {i: hashlib.sha256(data).hexdigest() for i, data in LAYERS.items()}
    assert out["search"]["results"] == [{"description": "", "name": "foo/bar"}]
