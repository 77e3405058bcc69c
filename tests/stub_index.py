"""
A small index (the Hub-style service a registry asks in token mode), served by the test
process on 127.0.0.1 with the standard library, counting the calls it gets.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_IMAGES = re.compile(r"/v1/repositories/([^/]+/[^/]+)/images")
_ACCESS = re.compile(r"/v1/repositories/([^/]+/[^/]+)/layer/([^/]+)/access")


class StubIndex:
    """
    @ivar images: repository key → image ids the index lists for a valid token.
    @ivar valid: the signatures it accepts.
    @ivar granted: (repository key, image id) pairs it grants access to.
    @ivar calls: every (path, Authorization) it was asked, in order.
    @ivar delay: seconds to wait before answering (a slow or hanging index).
    """

    def __init__(self) -> None:
        self.images: dict[str, list[str]] = {}
        self.valid: set[str] = set()
        self.granted: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str]] = []
        self.delay = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization", "")
                stub.calls.append((self.path, authorization))
                if stub.delay:
                    time.sleep(stub.delay)
                status, body = stub.answer(self.path, authorization)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _signature(self, authorization: str) -> str | None:
        match = re.search(r"signature=([^,\s]+)", authorization)
        return match.group(1) if match else None

    def answer(self, path: str, authorization: str) -> tuple[int, object]:
        if self._signature(authorization) not in self.valid:
            return 401, {"error": "no"}
        match = _IMAGES.fullmatch(path)
        if match:
            return 200, [{"id": i} for i in self.images.get(match.group(1), [])]
        match = _ACCESS.fullmatch(path)
        if match:
            return 200, {"access": (match.group(1), match.group(2)) in self.granted}
        return 404, {"error": "not found"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
