"""The Klein routes in memory, through treq's StubTreq (no sockets)."""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.tempdirs import TemporaryDirectories
from twistreg.config import load_settings
from twistreg.service import build_registry
from twistreg.web.site import registry_resource


class AppTests(TemporaryDirectories, SynchronousTestCase):
    def client(self, config: str = "dev:\n  standalone: true\n") -> StubTreq:
        """An in-memory client of a registry over a fresh directory (no search: no threads)."""
        path = self.temporary_directory() + "/config.yml"
        with open(path, "w") as f:
            f.write(config)
        settings = load_settings(path, system_config_path=None, environ={},
                                 overrides={"storage_path": self.temporary_directory()})
        clock = MemoryReactorClock()
        clock.advance(1795757723)
        return StubTreq(registry_resource(build_registry(settings, clock)))

    def fetch(self, stub: StubTreq, method: str, url: str, **kwargs):
        response = self.successResultOf(stub.request(method, "http://r" + url, **kwargs))
        return response, self.successResultOf(response.content())

    def test_ping(self) -> None:
        response, body = self.fetch(self.client(), "GET", "/v1/_ping")
        self.assertEqual((response.code, body), (200, b"{}"))
        self.assertEqual(response.headers.getRawHeaders("X-Docker-Registry-Standalone"), ["True"])

    def test_unknown_route_is_json(self) -> None:
        response, body = self.fetch(self.client(), "GET", "/v1/_ping/")
        self.assertEqual((response.code, json.loads(body)), (404, {"error": "Not found"}))
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/json"])

    def test_wrong_method(self) -> None:
        response, body = self.fetch(self.client(), "POST", "/v1/images/" + "a" * 64 + "/json")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("Allow"), ["GET, HEAD, OPTIONS, PUT"])

    def test_tag_metadata_uses_the_clock(self) -> None:
        stub = self.client()
        image = "b" * 64
        self.fetch(stub, "PUT", f"/v1/images/{image}/json", data=json.dumps({"id": image}))
        response, _ = self.fetch(stub, "PUT", "/v1/repositories/foo/bar/tags/v1",
                                 data=json.dumps(image))
        self.assertEqual(response.code, 200)
        _, body = self.fetch(stub, "GET", "/v1/repositories/foo/bar/tags/v1/json")
        self.assertEqual(body, b'{"last_update": 1795757723}')

    def test_index_routes_need_standalone(self) -> None:
        response, _ = self.fetch(self.client(), "GET", "/v1/users")
        self.assertEqual(response.code, 200)
        stub = self.client("dev:\n  standalone: false\n  disable_token_auth: true\n")
        response, _ = self.fetch(stub, "GET", "/v1/users")
        self.assertEqual(response.code, 404)
        response, _ = self.fetch(stub, "GET", "/v1/repositories/foo/bar/images")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("Allow"), ["DELETE, OPTIONS"])

    def test_buffered_layer_upload_needs_authorization(self) -> None:
        """Under another Site the layer body is buffered, and still authorized first."""
        stub = self.client("dev:\n  standalone: false\n")
        response, body = self.fetch(stub, "PUT", "/v1/images/" + "c" * 64 + "/layer",
                                    data=b"layer")
        self.assertEqual((response.code, json.loads(body)),
                         (401, {"error": "Requires authorization"}))
