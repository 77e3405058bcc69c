"""
C{readonly} and C{auth.htpasswd} in the service: a read-only registry starts on storage it
cannot write and leaves the hourly purge alone; a HUP re-reads the htpasswd file, and one it
cannot use keeps the workers that serve, with one line.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from tests.test_htpasswd import write_htpasswd
from tests.test_service import Reactor, settings_for, started_pool
from twistreg.service import make_service, purge_uploads_hourly
from twistreg.storage.interface import IStaleUploads

READONLY = "dev:\n  standalone: true\n  readonly: true\n  v2: false\n"


@implementer(IStaleUploads)
class CountedPurges:
    def __init__(self) -> None:
        self.purges = 0

    def purge_stale_uploads(self) -> defer.Deferred:
        self.purges += 1
        return defer.succeed(0)


def test_a_read_only_registry_starts_on_storage_it_cannot_write(tmp_path,
                                                                 read_only_directory):
    settings, given = settings_for(tmp_path, READONLY, storage_path=str(read_only_directory),
                                   **{"server.workers": "0"})
    made = make_service(settings, Reactor(), overrides=given)
    made.startService()
    made.stopService()


def test_a_read_only_registry_purges_nothing(tmp_path):
    settings, _ = settings_for(tmp_path, READONLY)
    storage, clock = CountedPurges(), MemoryReactorClock()
    job = purge_uploads_hourly(clock, storage, settings)
    clock.advance(3600 * 3)
    job.stop()
    assert storage.purges == 0


def test_the_purge_follows_readonly_as_a_reload_changes_it(tmp_path):
    settings, _ = settings_for(tmp_path, READONLY)
    storage, clock = CountedPurges(), MemoryReactorClock()
    readonly = [True]
    job = purge_uploads_hourly(clock, storage, settings, lambda: readonly[0])
    assert storage.purges == 0
    readonly[0] = False
    clock.advance(3600)
    assert storage.purges == 1
    job.stop()


def test_a_reload_rereads_the_htpasswd_file(tmp_path, events):
    pool, reactor, told = started_pool(tmp_path)
    htpasswd = tmp_path / "htpasswd"
    config = (f"dev:\n  standalone: true\n  auth:\n    htpasswd:\n      path: {htpasswd}\n")
    try:
        (tmp_path / "config.yml").write_text(config)
        htpasswd.write_text("alice:plain-text\n")
        pool.reload()
        assert len(reactor.spawned) == 1 and reactor.spawned[0].signals == []
        [failed] = [e for e in events if e.get("pool_event") == "reload_failed"]
        assert failed["reason"] == (f"htpasswd file {htpasswd}, line 1: the entry of 'alice'"
                                    " is not a bcrypt hash (write it with htpasswd -B);"
                                    " generation 0 serves on")
        assert "plain-text" not in repr(events)
        write_htpasswd(htpasswd, {"alice": "secret"})
        pool.reload()
        assert len(reactor.spawned) == 2
        assert set(pool.settings.passwords.users) == {"alice"}
    finally:
        pool.stopService()
        for process in reactor.live():
            process.end()
