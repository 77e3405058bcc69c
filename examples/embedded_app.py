"""
A Twisted application with routes of its own that embeds two twistreg registries:

- the registry *resource*, beside the application's own Klein routes on the application's
  port (docker wants the registry at the root of a host and port, so the application keeps
  its routes under C{/app/} and hands every other path to the registry), over one storage;
- the registry *service*, set in the application's C{MultiService}, on a port of its own,
  over another storage: in this process, or with C{--workers N} in a pool of worker
  processes.

Run it from the repository root with the virtualenv of the README's set-up (worker
processes import twistreg too):

    .venv/bin/python examples/embedded_app.py --port 8080 --storage /tmp/app-registry \\
        --registry-port 5001 --registry-storage /tmp/second-registry

then C{curl localhost:8080/app/hello}, C{docker push localhost:8080/foo/bar} and
C{docker push localhost:5001/foo/bar}. Port 0 picks a free port; the log says which.
"""

from __future__ import annotations

import argparse
import sys

from klein import Klein
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.server import Site

from twistreg import embed
from twistreg.config import ConfigError

log = Logger(namespace="example")


def application(reactor, storage: str) -> Klein:
    """The application's own routes, and the registry for every other path."""
    app = Klein()
    registry = embed.registry_resource(reactor, overrides={"storage_path": storage})

    @app.route("/app/hello")
    def hello(request):
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"hello": "from the application"}'

    @app.route("/", branch=True)
    def everything_else(request):
        return registry

    return app


def main(reactor, args: argparse.Namespace) -> None:
    """Build and start everything; the reactor runs afterwards."""
    services = MultiService()
    # The second registry: a service of the application, with its own storage and port.
    embed.registry_service(reactor, overrides={
        "storage_path": args.registry_storage,
        "server.listen": (f"tcp:{args.registry_port}:interface={args.interface}",),
        "server.workers": args.workers,
    }).setServiceParent(services)

    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface=args.interface)
    site = Site(application(reactor, args.storage).resource())
    endpoint.listen(site).addCallback(
        lambda port: log.info("application serving on {host}:{port}",
                              host=port.getHost().host, port=port.getHost().port))
    services.startService()
    reactor.addSystemEventTrigger("before", "shutdown", services.stopService)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--storage", default="/tmp/app-registry")
    parser.add_argument("--registry-port", type=int, default=5001)
    parser.add_argument("--registry-storage", default="/tmp/second-registry")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes of the second registry (0: this process)")
    arguments = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    from twisted.internet import reactor

    try:
        main(reactor, arguments)
    except ConfigError as error:
        sys.exit(f"embedded_app: {error}")
    reactor.run()
