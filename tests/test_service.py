"""
The one service builder and the checks it makes, at start and on HUP, without processes: the
pool on a recorded C{spawnProcess} (tests/test_arbiter.py), logs on an observer.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from twisted.application.service import Service
from twisted.internet.testing import MemoryReactor

from tests.server import plugin_module
from tests.test_arbiter import ProcessReactor
from tests.threads import InlinePool
from twistreg.config import ConfigError, load_settings
from twistreg.service import (
    PreforkRegistryService,
    RegistryService,
    check_settings,
    make_service,
)


class Reactor(ProcessReactor):
    """Records spawns, listens in memory, and runs thread work inline (the temp sweep)."""

    def getThreadPool(self):
        return InlinePool()






def settings_for(tmp_path: Path, text: str = "dev:\n  standalone: true\n", **overrides):
    config = tmp_path / "config.yml"
    config.write_text(text)
    given = {"storage_path": str(tmp_path / "storage"),
             "server.listen": ("tcp:0:interface=127.0.0.1",), **overrides}
    return load_settings(str(config), None, given, environ={}, system_config_path=None), given


# -- one builder -----------------------------------------------------------------------------------


def test_make_service_serves_in_process_with_no_workers(tmp_path):
    settings, given = settings_for(tmp_path, **{"server.workers": "0"})
    ready: list[str] = []
    made = make_service(settings, Reactor(), overrides=given, on_ready=ready.append)
    assert type(made) is RegistryService
    made.startService()
    try:
        assert ready == ["serving"] and len(made.ports) == 1
    finally:
        made.stopService()


def test_make_service_builds_a_pool_that_rereads_the_same_sources(tmp_path):
    settings, given = settings_for(tmp_path, **{"server.workers": "3"})
    ready: list[str] = []
    reactor = Reactor()
    made = make_service(settings, reactor, overrides=given, on_ready=ready.append,
                        argv=["twist", "twistreg"])
    assert type(made) is PreforkRegistryService
    assert made.config.workers == 3 and made.config.argv == ("twist", "twistreg")
    assert made.config.app_options["config"] == str(tmp_path / "config.yml")
    assert made.config.app_options["overrides"]["storage_path"] == str(tmp_path / "storage")
    made.startService()
    try:
        for process in reactor.spawned:
            process.ready()
        assert ready == ["serving (worker generation 0)"]
    finally:
        made.stopService()
        for process in reactor.live():
            process.end()


# -- the checks at start ---------------------------------------------------------------------------


def test_a_storage_path_that_cannot_be_created_is_one_line(tmp_path, read_only_directory):
    settings, _ = settings_for(tmp_path, storage_path=str(read_only_directory / "storage"))
    with pytest.raises(ConfigError, match=(
            rf"^cannot create storage path {read_only_directory}/storage: "
            "(Operation not permitted|Permission denied)$")):
        make_service(settings, Reactor())


def test_a_read_only_storage_path_stops_the_start_before_any_worker(tmp_path,
                                                                     read_only_directory):
    settings, _ = settings_for(tmp_path, storage_path=str(read_only_directory),
                               **{"server.workers": "2"})
    reactor = Reactor()
    with pytest.raises(ConfigError, match=(
            rf"^cannot write to storage path {read_only_directory}: ")):
        make_service(settings, reactor)
    assert reactor.spawned == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"server.access_log": "/nonexistent/directory/access.log"},
     "cannot open the access log /nonexistent/directory/access.log: No such file or directory"),
    ({"server.wsgi": "tests.no_such_module:app", "server.wsgi_mount": "/ui"},
     "cannot load the WSGI application 'tests.no_such_module:app': "
     "ModuleNotFoundError: No module named 'tests.no_such_module'"),
    ({"server.wsgi": "no_such_package.app"},
     "cannot load the WSGI application 'no_such_package.app': "
     "ModuleNotFoundError: No module named 'no_such_package'"),
])
def test_what_every_worker_would_fail_on_is_checked_first(tmp_path, overrides, message):
    settings, _ = settings_for(tmp_path, **overrides)
    with pytest.raises(ConfigError) as caught:
        check_settings(settings, MemoryReactor())
    assert str(caught.value) == message


@pytest.mark.parametrize(("keys", "message"), [
    ("", "storage s3 needs a bucket: set s3_bucket (or boto_bucket)"),
    ("  s3_bucket: b\n  s3_access_key: k\n  s3_secret_key: s\n  s3_secure: false\n"
     "  boto_host: 127.0.0.1\n  boto_port: 9\n"
     "  boto_calling_format: boto.s3.connection.OrdinaryCallingFormat\n",
     "cannot reach S3 at http://127.0.0.1:9: [Errno 111] Connection refused"),
])
def test_an_unusable_s3_is_one_line(tmp_path, keys, message):
    settings, _ = settings_for(tmp_path, "dev:\n  storage: s3\n" + keys)
    with pytest.raises(ConfigError) as caught:
        check_settings(settings, MemoryReactor())
    assert str(caught.value) == message


def test_the_wsgi_module_is_found_not_imported(tmp_path, monkeypatch):
    (tmp_path / "side_effect_app.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.chdir(tmp_path)
    settings, _ = settings_for(tmp_path, **{"server.wsgi": "side_effect_app:app"})
    check_settings(settings, MemoryReactor())


# -- reload --------------------------------------------------------------------------------------


def started_pool(tmp_path):
    """A pool of one ready worker over tmp_path's config file; what it told systemd."""
    settings, given = settings_for(tmp_path, **{"server.workers": "1", "server.timeout": "0"})
    reactor = Reactor()
    told: list[str] = []
    pool = make_service(settings, reactor, overrides=given, on_ready=told.append,
                        on_reloading=lambda: told.append("reloading"))
    pool.startService()
    reactor.spawned[0].ready()
    return pool, reactor, told


def test_a_reload_that_cannot_work_keeps_the_workers(tmp_path, events):
    pool, reactor, told = started_pool(tmp_path)
    try:
        (tmp_path / "config.yml").write_text("dev:\n  storage: swift\n")
        pool.reload()
        assert len(reactor.spawned) == 1 and reactor.spawned[0].signals == []
        assert told == ["serving (worker generation 0)", "reloading",
                        "serving (worker generation 0)"]
        [failed] = [e for e in events if e.get("pool_event") == "reload_failed"]
        assert failed["log_level"].name == "error"
        assert failed["reason"] == ("storage driver 'swift' is not supported (supported: local,"
                                    " file, s3); generation 0 serves on")
        # The configuration in force is still the old one: a HUP after a fix works.
        assert pool.settings.storage == "local"
        (tmp_path / "config.yml").write_text("dev:\n  standalone: true\n")
        pool.reload()
        assert len(reactor.spawned) == 2
    finally:
        pool.stopService()
        for process in reactor.live():
            process.end()


def test_a_reload_whose_workers_cannot_load_ends_once_with_ready(tmp_path, events):
    pool, reactor, told = started_pool(tmp_path)
    try:
        pool.reload()
        reactor.spawned[1].say("failed cannot load the registry")
        reactor.spawned[1].end(code=4)
        reactor.advance(60)
        assert len(reactor.spawned) == 2
        assert told[-2:] == ["reloading", "serving (worker generation 0)"]
        [failed] = [e for e in events if e.get("pool_event") == "reload_failed"]
        assert failed["reason"] == ("worker failed to load the application: cannot load the"
                                    " registry; generation 0 serves on")
    finally:
        pool.stopService()
        for process in reactor.live():
            process.end()


# -- the plugin's start --------------------------------------------------------------------------


class Failing(Service):
    def startService(self):
        raise OSError("no such thing")


def test_workers_spawned_before_a_start_error_are_stopped(tmp_path):
    _ExitOnStartError = plugin_module()._ExitOnStartError

    settings, given = settings_for(tmp_path, **{"server.workers": "2"})
    reactor = Reactor()
    parent = _ExitOnStartError(reactor)
    make_service(settings, reactor, overrides=given).setServiceParent(parent)
    Failing().setServiceParent(parent)
    with pytest.raises(SystemExit) as caught:
        parent.startService()
    assert str(caught.value) == "twistreg: cannot start: no such thing"
    assert [process.signals for process in reactor.spawned] == [["TERM"], ["TERM"]]
    for process in reactor.spawned:
        process.end(sig=signal.SIGTERM)


def test_a_pidfile_that_cannot_be_written_is_named(tmp_path):
    _ExitOnStartError = plugin_module()._ExitOnStartError

    from twistreg.server.pidfile import PidFile

    parent = _ExitOnStartError(Reactor())
    PidFile(str(tmp_path / "missing" / "twistreg.pid")).setServiceParent(parent)
    with pytest.raises(SystemExit) as caught:
        parent.startService()
    assert str(caught.value) == (
        f"twistreg: cannot write the pidfile {tmp_path}/missing/twistreg.pid:"
        " No such file or directory")
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
