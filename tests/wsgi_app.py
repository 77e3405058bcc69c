"""
A small Flask application for the WSGI hosting tests (tests/test_wsgi.py), served with
C{twist twistreg --wsgi tests.wsgi_app:application}.

Flask is a test dependency only. L{application} adds, in front of Flask, a path that fails
outside any framework, so that the server's own error handling is what answers it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from flask import Flask, Response, jsonify, request, url_for

MIB = 1 << 20

app = Flask(__name__)


@app.get("/hello")
def hello():
    return "hello from flask"


@app.post("/form")
def form():
    return jsonify(name=request.form.get("name"), json=request.get_json(silent=True))


@app.route("/hash", methods=["POST", "PUT"])
def hash_body():
    """Read the body as a stream, the way an upload handler does, and hash it."""
    digest = hashlib.sha256()
    size = 0
    while True:
        data = request.stream.read(MIB)
        if not data:
            break
        digest.update(data)
        size += len(data)
    return jsonify(size=size, sha256=digest.hexdigest(),
                   content_length=request.environ.get("CONTENT_LENGTH"))


def block(index: int) -> bytes:
    """The C{index}th MiB of a streamed answer: a fresh object each time, like real data."""
    return bytes([index % 251]) * MIB


@app.get("/stream/<int:mib>")
def stream(mib: int):
    return Response((block(i) for i in range(mib)), mimetype="application/octet-stream")


@app.get("/boom")
def boom():
    raise RuntimeError("boom in a view")


@app.get("/gate")
def gate():
    """
    Wait in the gate directory C{dir} until the test opens it (creates C{dir/open}); answer
    how many requests were inside, this one included, when this one came in. Files, not
    memory: the requests may be spread over several processes.
    """
    directory = request.args["dir"]
    inside = os.path.join(directory, f"inside-{os.getpid()}-{threading.get_ident()}")
    with open(inside, "w"):
        pass
    count = sum(name.startswith("inside-") for name in os.listdir(directory))
    try:
        while not os.path.exists(os.path.join(directory, "open")):
            time.sleep(0.01)
    finally:
        os.unlink(inside)
    return jsonify(inside=count)


@app.get("/where")
def where():
    environ = request.environ
    return jsonify(
        script_root=request.script_root,
        path=request.path,
        url=url_for("where", _external=True),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        pid=os.getpid(),
        environ={key: value for key, value in environ.items() if isinstance(value, (str, bool))},
        version=list(environ["wsgi.version"]),
    )


def application(environ, start_response):
    """Flask, behind a path that raises (mid-stream too) without a framework to catch it."""
    path = environ["PATH_INFO"]
    if path == "/raw/boom":
        raise RuntimeError("boom outside Flask")
    if path == "/raw/broken-stream":
        def body():
            yield b"the beginning, "
            raise RuntimeError("boom mid-stream")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    return app(environ, start_response)
