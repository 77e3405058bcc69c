"""
C{twist twistreg}: the registry as a Twisted application plugin.

Kept import-light: C{twist} imports every plugin to list them, so the registry itself is
only imported when this one is chosen.
"""

from __future__ import annotations

import sys

from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """The command line of C{twist twistreg}; each option overrides its config key."""

    optParameters = [
        ["port", "p", None, "TCP port to listen on, all interfaces (default 5000).", int],
        ["config", "c", None, "Config file (default $DOCKER_REGISTRY_CONFIG, then "
         "/etc/twistreg/config.yml, then built-in defaults)."],
        ["flavor", "f", None, "Config flavor (default $SETTINGS_FLAVOR, then dev)."],
        ["storage-path", None, None, "Storage directory, overriding the config's storage_path."],
        ["workers", "w", None, "Worker processes; 0 serves in this process.", int],
        ["access-log", None, None, "Access log file, or - for standard output."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint string to listen on (repeatable), e.g. tcp:5000:interface=127.0.0.1,
        unix:/run/twistreg.sock, ssl:443:privateKey=key.pem:certKey=cert.pem."""
        self["listen"].append(endpoint)

    def overrides(self) -> dict:
        """The options given, as config overrides."""
        return {
            "storage_path": self["storage-path"],
            "server.port": self["port"],
            "server.listen": tuple(self["listen"]) or None,
            "server.workers": self["workers"],
            "server.access_log": self["access-log"],
        }


def _given(option: str) -> bool:
    """Whether C{twist} itself was given C{option} on the command line."""
    return any(arg.startswith(option) for arg in sys.argv)


def _configure_logs(options: Options, loglevel: str) -> None:
    """
    Readable logs at the configured level: off a terminal C{twist} writes JSON text
    sequences, so choose one line per event unless C{--log-format} was given, and take the
    config's C{loglevel} unless C{--log-level} was.
    """
    from twisted.logger import LogLevel

    from twistreg.logs import line_log_observer

    parent = options.parent
    if parent is None:
        return
    if not _given("--log-format"):
        parent["fileLogObserverFactory"] = line_log_observer
        parent["logFormat"] = "text"
    if not _given("--log-level"):
        parent["logLevel"] = LogLevel.levelWithName({"warning": "warn"}.get(loglevel, loglevel))


@implementer(IServiceMaker, IPlugin)
class RegistryServiceMaker:
    """Makes the registry service from the command line."""

    tapname = "twistreg"
    description = "Docker Registry V1 server (drop-in for docker-registry 0.9.1)."
    options = Options

    def makeService(self, options: Options):
        from twisted.internet import reactor
        from twisted.logger import Logger

        from twistreg.config import ConfigError, load_settings
        from twistreg.service import RegistryService

        try:
            settings = load_settings(options["config"], options["flavor"], options.overrides())
            registry_service = RegistryService(settings, reactor)
        except ConfigError as error:
            raise SystemExit(f"twistreg: {error}") from None
        _configure_logs(options, settings.loglevel)
        if settings.server.workers:
            Logger().warn(
                "--workers {workers}: the process pool is not available yet; "
                "serving in this process",
                workers=settings.server.workers,
            )
        parent = _ExitOnStartError()
        registry_service.setServiceParent(parent)
        return parent


class _ExitOnStartError(MultiService):
    """
    Ends C{twist} with one line and status 1, not a traceback, when the registry cannot
    start (a port in use, a certificate that cannot be read).
    """

    def startService(self) -> None:
        try:
            super().startService()
        except Exception as error:
            raise SystemExit(f"twistreg: cannot start: {error}") from None


serviceMaker = RegistryServiceMaker()
