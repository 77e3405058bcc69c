# -*- test-case-name: tests.test_plugin,tests.test_service -*-
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
        ["port", "p", None, "TCP port to listen on, all interfaces (default 5000)."],
        ["config", "c", None, "Config file (default $DOCKER_REGISTRY_CONFIG, then "
         "/etc/twistreg/config.yml, then built-in defaults)."],
        ["flavor", "f", None, "Config flavor (default $SETTINGS_FLAVOR, then dev)."],
        ["storage-path", None, None, "Storage directory, overriding the config's storage_path."],
        ["workers", "w", None, "Worker processes (default: one per CPU); 0 serves in this "
         "process."],
        ["access-log", None, None, "Access log file, or - for standard output."],
        ["max-requests", None, None, "Recycle a worker after this many requests, once they "
         "have finished (default 0: never)."],
        ["max-requests-jitter", None, None, "Add a random 0..N to --max-requests per worker, "
         "so workers do not recycle together (default 0)."],
        ["timeout", "t", None, "Kill and replace a worker whose event loop is silent this many "
         "seconds; long transfers are not silence (default 30, 0: never)."],
        ["graceful-timeout", None, None, "Seconds in-flight requests get on a graceful stop, "
         "reload or recycle (default 30)."],
        ["max-worker-memory", None, None, "Recycle a worker whose resident memory exceeds this "
         "many MiB (default 0: never)."],
        ["pidfile", None, None, "Write the master's PID to this file."],
        ["wsgi", None, None, "Host this WSGI application (module:callable) in every process; "
         "alone at the root, or under --wsgi-mount beside the registry."],
        ["wsgi-mount", None, None, "Path prefix of the WSGI application (e.g. /ui), beside the "
         "registry routes (default /: the application alone)."],
        ["threads", None, None, "Threads of the WSGI application, per process (default 16)."],
        ["trusted-proxies", None, None, "Comma-separated addresses or networks (and unix, *) "
         "whose X-Forwarded-For/-Proto the WSGI application believes (default: none)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_version(self) -> None:
        """Print twistreg's version and exit."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("twistreg")
        except PackageNotFoundError:
            # A source tree on PYTHONPATH, not installed: the package's own idea of itself.
            from twistreg import __version__ as installed
        print(f"twistreg {installed}")
        sys.exit(0)

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
            "server.max_requests": self["max-requests"],
            "server.max_requests_jitter": self["max-requests-jitter"],
            "server.timeout": self["timeout"],
            "server.graceful_timeout": self["graceful-timeout"],
            "server.max_worker_memory": self["max-worker-memory"],
            "server.pidfile": self["pidfile"],
            "server.wsgi": self["wsgi"],
            "server.wsgi_mount": self["wsgi-mount"],
            "server.threads": self["threads"],
            "server.trusted_proxies": self["trusted-proxies"],
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
        import os

        from twisted.internet import reactor

        from twistreg.config import ConfigError, load_settings
        from twistreg.server.notify import Notifier
        from twistreg.service import PreforkRegistryService, make_service
        from twistreg.web.capacity import raise_open_file_limit

        # Idle keep-alive connections each hold a descriptor; workers inherit the limit.
        raise_open_file_limit()
        parent = _ExitOnStartError(reactor)
        notifier = Notifier.from_environ(os.environ)
        try:
            settings = load_settings(options["config"], options["flavor"], options.overrides())
            _configure_logs(options, settings.loglevel)
            registry_service = make_service(
                settings,
                reactor,
                overrides=options.overrides(),
                on_fatal=parent.fail,
                on_ready=notifier.ready,
                on_reloading=notifier.reloading,
                worker_logs=_worker_logs(options, settings.loglevel),
                argv=sys.argv,
            )
        except ConfigError as error:
            raise SystemExit(f"twistreg: {error}") from None
        if settings.server.pidfile:
            from twistreg.server.pidfile import PidFile

            PidFile(settings.server.pidfile).setServiceParent(parent)
        registry_service.setServiceParent(parent)
        reactor.addSystemEventTrigger("before", "shutdown", notifier.stopping)
        if isinstance(registry_service, PreforkRegistryService):
            from twistreg.server.signals import install_master_signals
            from twistreg.server.worker import set_title

            install_master_signals(reactor, registry_service,
                                   reopen_logs=_reopenable_log_file(options))
            set_title("twistreg: master [" + " ".join(sys.argv) + "]")
        return parent


def _reopenable_log_file(options: Options):
    """
    Swap C{twist --log-file PATH}'s file for one that SIGUSR1 reopens (after logrotate moved
    it); C{twist} starts logging after this, to whatever C{logFile} then is. Its C{reopen},
    or None when the log goes to standard output or error.
    """
    parent = options.parent
    if parent is None:
        return None
    target = parent.get("logFile")
    path = getattr(target, "name", None)
    if target in (sys.stdout, sys.stderr, None) or not isinstance(path, str):
        return None
    from twistreg.server.logfiles import ReopenableStream

    stream = ReopenableStream(path)
    target.close()
    parent["logFile"] = stream
    return stream.reopen


def _worker_logs(options: Options, loglevel: str) -> dict:
    """Where and how the workers log: as this process does."""
    parent = options.parent
    result: dict = {"log_level": loglevel, "log_format": "text", "log_file": None}
    if parent is None:
        return result
    level = parent.get("logLevel")
    if level is not None:
        result["log_level"] = level.name
    result["log_format"] = parent.get("logFormat", "text")
    target = parent.get("logFile")
    if target is sys.stderr:
        result["log_file"] = "/dev/stderr"
    elif target is not sys.stdout and isinstance(getattr(target, "name", None), str):
        result["log_file"] = target.name
    return result


class _ExitOnStartError(MultiService):
    """
    Ends C{twist} with one line and status 1, not a traceback, when the registry cannot
    start (a port in use, a certificate that cannot be read), or when its workers cannot
    load the application at all.
    """

    def __init__(self, reactor) -> None:
        super().__init__()
        self._reactor = reactor

    def startService(self) -> None:
        from twistreg.config import ConfigError

        try:
            super().startService()
        except Exception as error:
            # What did start stops: workers already spawned are told to go (TERM), so that
            # none outlives this process.
            self.stopService()
            what = "" if isinstance(error, ConfigError) else "cannot start: "
            raise SystemExit(f"twistreg: {what}{error}") from None

    def fail(self, problem: Exception) -> None:
        """Stop everything, then exit with status 1 (C{twist} itself would exit 0)."""
        import os

        from twisted.internet.error import ReactorNotRunning

        def exit_1() -> None:
            sys.stdout.flush()
            # Straight to fd 2: twist turned sys.stderr into log events.
            os.write(2, f"twistreg: {problem}\n".encode())
            os._exit(1)

        self._reactor.addSystemEventTrigger("after", "shutdown", exit_1)
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass


serviceMaker = RegistryServiceMaker()
