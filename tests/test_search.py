"""
The search index and R26 (docs/api.md): the same tests on SQLite and on a real
PostgreSQL, the 0.9.1 schema, the storage walk, the route through StubTreq, and the reindex
command.

The database work runs inline (L{InlineConnectionPool}), so the tests are synchronous and no
reactor runs; the real pools, threads and reactor are used by the tests that start processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from unittest import skipIf

import attrs
import pytest
from treq.testing import StubTreq
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.server import ROOT
from tests.tempdirs import TemporaryDirectories
from tests.threads import InlinePool
from twistreg.config import ConfigError, load_settings
from twistreg.layout import parse_repository
from twistreg.registry import search
from twistreg.registry.search import POSTGRESQL, SQLITE, SearchIndex, open_search_index, walk
from twistreg.service import build_registry
from twistreg.storage.local import LocalStorage
from twistreg.web.site import registry_resource

# What docker-registry 0.9.1 (SQLAlchemy 0.9.4) left in sqlite_master, captured from it.
SCHEMA_091 = [
    ("table", "version", "version",
     "CREATE TABLE version (\n\tid INTEGER NOT NULL, \n\tPRIMARY KEY (id)\n)"),
    ("table", "repository", "repository",
     "CREATE TABLE repository (\n\tid INTEGER NOT NULL, \n\tname VARCHAR(95) NOT NULL, "
     "\n\tdescription VARCHAR(100), \n\tPRIMARY KEY (id), \n\tUNIQUE (name)\n)"),
    ("index", "sqlite_autoindex_repository_1", "repository", None),
]

# §4.26's example answer.
BAR_ANSWER = (
    b'{"num_results": 1, "query": "bar", "results": [{"description": "", "name": "foo/bar"}]}'
)


class _InlineReactor:
    """What adbapi asks of its reactor when its work runs in the calling thread."""

    def callWhenRunning(self, f, *args, **kwargs) -> None:
        """The pool never starts: its work needs no thread."""

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


class InlineConnectionPool(adbapi.ConnectionPool):
    """
    A real adbapi pool (transactions, commit, rollback) whose work runs at once in the
    calling thread: a Deferred it returns has its result when the call returns.  Connections
    are per thread, as in adbapi, so test threads get their own.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, cp_reactor=_InlineReactor(), cp_noisy=False, **kwargs)
        self.threadpool = InlinePool()


def write_tree(root: str, files: dict[str, str]) -> None:
    for key, content in files.items():
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)


def config_file(directory: str, text: str) -> str:
    path = os.path.join(directory, "config.yml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def open_in_processes(database: str, count: int) -> list[str]:
    """
    C{count} processes open the index of C{database} (a config URL) at the same instant, each
    with the real pool, threads and reactor; what each printed.
    """
    script = textwrap.dedent("""
        import sys, time
        import attrs
        from twisted.internet import task
        from twistreg.config import load_settings
        from twistreg.registry.search import open_search_index
        def main(reactor, database, start):
            settings = load_settings(environ={}, system_config_path=None)
            settings = attrs.evolve(settings, search_database=database)
            index = open_search_index(settings, reactor)
            while time.time() < float(start):
                pass
            d = index.open()
            d.addCallback(print)
            d.addBoth(lambda result: (index.close(), result)[1])
            return d
        task.react(main, sys.argv[1:])
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = str(time.time() + 2)  # every process has imported Twisted by then
    processes = [
        subprocess.Popen([sys.executable, "-c", script, database, start], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(count)
    ]
    return [p.communicate(timeout=60)[0].strip() for p in processes]


class SearchIndexTests(TemporaryDirectories):
    """
    The rules of §9 on one backend; subclasses say which (L{make_index}), give raw SQL access
    (L{execute}) to set up what the routes never write, and the database's config URL.
    """

    case_sensitive: bool
    url: str

    def make_index(self) -> SearchIndex:
        raise NotImplementedError

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def index(self) -> SearchIndex:
        index = self.make_index()
        self.addCleanup(index.close)
        return index

    def opened(self) -> SearchIndex:
        index = self.index()
        self.assertTrue(self.successResultOf(index.open()))
        return index

    def search(self, index: SearchIndex, *args) -> tuple:
        return self.successResultOf(index.search(*args))

    def rows(self, index: SearchIndex) -> list[tuple]:
        return self.search(index, "")[1]

    def names(self, index: SearchIndex, *args) -> list[str]:
        return [name for name, _ in self.search(index, *args)[1]]

    def call(self, d: defer.Deferred):
        return self.successResultOf(d)

    def test_open_creates_the_schema_once(self) -> None:
        self.opened()
        self.assertFalse(self.call(self.index().open()))
        self.assertEqual(self.execute("SELECT id FROM version"), [(1,)])

    def test_concurrent_open_creates_once(self) -> None:
        """Eight connections opening a new database at the same instant: one creates it."""
        indexes = [self.index() for _ in range(8)]
        barrier = threading.Barrier(len(indexes))
        opened: dict[int, defer.Deferred] = {}

        def open_index(number: int) -> None:
            barrier.wait()
            opened[number] = indexes[number].open()

        threads = [threading.Thread(target=open_index, args=(n,)) for n in range(len(indexes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        created = [self.call(opened[n]) for n in range(len(indexes))]
        self.assertEqual(sorted(created), [False] * 7 + [True])
        self.assertEqual(self.execute("SELECT id FROM version"), [(1,)])

    def test_processes_create_once(self) -> None:
        """The same across processes, through the real pool and reactor."""
        outputs = open_in_processes(self.url, 6)
        self.assertEqual(sorted(outputs), ["False"] * 5 + ["True"], outputs)
        self.assertEqual(self.execute("SELECT id FROM version"), [(1,)])

    def test_other_version_is_a_startup_error(self) -> None:
        self.opened()
        self.execute("UPDATE version SET id = 2")
        failure = self.failureResultOf(self.index().open(), ConfigError)
        self.assertEqual(str(failure.value), "unrecognized search index version 2")

    def test_empty_version_table_counts_as_new(self) -> None:
        self.opened()
        self.execute("DELETE FROM version")
        self.assertTrue(self.call(self.index().open()))
        self.assertEqual(self.execute("SELECT id FROM version"), [(1,)])

    def test_register_once(self) -> None:
        index = self.opened()
        for key in ("foo/bar", "foo/bar", "library/ubuntu"):
            self.assertIsNone(self.call(index.register(key)))
        self.assertEqual(self.rows(index), [("foo/bar", ""), ("library/ubuntu", "")])

    def test_set_pushed(self) -> None:
        index = self.opened()
        self.call(index.populate(["foo/walked"]))
        self.call(index.set_pushed("foo/walked"))
        self.call(index.set_pushed("foo/new"))
        self.assertEqual(self.rows(index), [("foo/walked", ""), ("foo/new", "")])

    def test_remove(self) -> None:
        index = self.opened()
        for key in ("a/one", "a/two", "a/three"):
            self.call(index.register(key))
        self.call(index.remove("a/two"))
        self.call(index.remove("a/missing"))
        self.assertEqual(self.rows(index), [("a/one", ""), ("a/three", "")])
        self.call(index.register("a/two"))
        self.assertEqual(self.names(index, ""), ["a/one", "a/three", "a/two"])

    def test_results_in_insertion_order(self) -> None:
        index = self.opened()
        for key in ("zeta/x", "alpha/x", "mid/x"):
            self.call(index.register(key))
        self.assertEqual(
            self.search(index, "x"), (3, [("zeta/x", ""), ("alpha/x", ""), ("mid/x", "")])
        )

    def test_substring_of_name_or_description(self) -> None:
        index = self.opened()
        self.call(index.register("foo/bar"))
        self.call(index.register("library/ubuntu"))
        self.execute("UPDATE repository SET description = 'an ubuntu-like distro'"
                     " WHERE name = 'foo/bar'")
        self.assertEqual(self.search(index, "o/b"), (1, [("foo/bar", "an ubuntu-like distro")]))
        self.assertEqual(self.names(index, "ubuntu"), ["foo/bar", "library/ubuntu"])
        self.assertEqual(self.search(index, "zzzznotfound"), (0, []))

    def test_percent_and_underscore_are_wildcards(self) -> None:
        index = self.opened()
        for key in ("foo/ab%25%24_-test", "foo/abXtest", "foo/plain"):
            self.call(index.register(key))
        self.assertEqual(self.search(index, "%")[0], 3)
        self.assertEqual(self.names(index, "ab_"), ["foo/ab%25%24_-test", "foo/abXtest"])
        self.assertEqual(self.names(index, "a%test"), ["foo/ab%25%24_-test", "foo/abXtest"])
        self.assertEqual(self.names(index, "%24_"), ["foo/ab%25%24_-test"])

    def test_case(self) -> None:
        index = self.opened()
        self.call(index.register("Foo/BAR"))
        expected = (0, []) if self.case_sensitive else (1, [("Foo/BAR", "")])
        self.assertEqual(self.search(index, "foo/bar"), expected)
        self.assertEqual(self.search(index, "Foo/BAR"), (1, [("Foo/BAR", "")]))

    def test_paging(self) -> None:
        index = self.opened()
        keys = [f"page/r{i}" for i in range(5)]
        for key in keys:
            self.call(index.register(key))
        pages = [self.search(index, "page/", 2, page) for page in (1, 2, 3, 4)]
        self.assertEqual(
            [(count, [name for name, _ in rows]) for count, rows in pages],
            [(5, keys[0:2]), (5, keys[2:4]), (5, keys[4:5]), (5, [])],
        )
        self.assertEqual(self.names(index, "page/", None, 1), keys)
        self.assertEqual(self.search(index, "page/", None, 2), (5, []))
        self.assertEqual(self.search(index, "page/", 100, 10**30), (5, []))
        self.assertEqual(self.search(index, "", 1, 1), (5, [("page/r0", "")]))

    def test_nul_matches_nothing(self) -> None:
        index = self.opened()
        self.call(index.register("foo/bar"))
        self.assertEqual(self.search(index, "\x00"), (0, []))

    def test_populate_adds_what_is_missing(self) -> None:
        index = self.opened()
        self.call(index.register("foo/pushed"))
        self.assertEqual(self.call(index.populate(["foo/pushed", "foo/walked", "foo/walked"])), 1)
        self.assertEqual(self.rows(index), [("foo/pushed", ""), ("foo/walked", None)])

    def test_rebuild_replaces_every_row(self) -> None:
        index = self.opened()
        self.call(index.register("foo/stale"))
        self.call(index.register("foo/kept"))
        self.assertEqual(self.call(index.rebuild(["foo/kept", "foo/new"])), 2)
        self.assertEqual(self.rows(index), [("foo/kept", None), ("foo/new", None)])
        self.assertEqual(self.call(index.rebuild([])), 0)
        self.assertEqual(self.rows(index), [])

    def test_write_failures_are_logged_not_raised(self) -> None:
        index = self.opened()
        self.execute("DROP TABLE repository")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertIsNone(self.call(index.register("foo/bar")))
        self.assertIsNone(self.call(index.set_pushed("foo/bar")))
        self.assertIsNone(self.call(index.remove("foo/bar")))
        failed = [e for e in events if "log_failure" in e]
        self.assertEqual(
            [(e["action"], e["name"]) for e in failed],
            [("registering", "foo/bar"), ("updating", "foo/bar"), ("removing", "foo/bar")],
        )
        self.assertEqual(len(self.flushLoggedErrors(index.database_error)), 3)

    def test_read_failures_raise(self) -> None:
        index = self.opened()
        self.execute("DROP TABLE repository")
        self.failureResultOf(index.search("x"), index.database_error)


class SQLiteSearchIndexTests(SearchIndexTests, SynchronousTestCase):
    case_sensitive = False

    def setUp(self) -> None:
        self.path = os.path.join(self.temporary_directory(), "docker-registry.db")
        self.url = "sqlite:///" + self.path

    def make_index(self) -> SearchIndex:
        pool = InlineConnectionPool("sqlite3", self.path, check_same_thread=False)
        return SearchIndex(pool, SQLITE, "test database")

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.path) as connection:
            return connection.execute(sql, args).fetchall()

    def test_schema_is_091s(self) -> None:
        self.opened()
        self.assertEqual(self.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"),
                         SCHEMA_091)

    def test_database_created_by_091(self) -> None:
        # What 0.9.1's create_all and start-up walk leave (rows named by directory, null
        # descriptions), then a push (description "").
        with sqlite3.connect(self.path) as connection:
            for _type, _name, _table, sql in SCHEMA_091[:2]:
                connection.execute(sql)
            connection.execute("INSERT INTO version (id) VALUES (1)")
            connection.execute("INSERT INTO repository (name, description) VALUES"
                               " ('library/ubuntu', NULL), ('foo/bar', '')")
        index = self.index()
        self.assertFalse(self.call(index.open()))
        self.call(index.register("foo/bar"))
        self.call(index.register("foo/new"))
        self.assertEqual(
            self.search(index, ""),
            (3, [("library/ubuntu", None), ("foo/bar", ""), ("foo/new", "")]),
        )
        self.assertEqual(
            self.execute("SELECT id, name FROM repository ORDER BY id"),
            [(1, "library/ubuntu"), (2, "foo/bar"), (3, "foo/new")],
        )

    def test_long_names_are_kept(self) -> None:
        index = self.opened()
        self.call(index.register("foo/" + "x" * 200))
        self.assertEqual(self.search(index, "xxx")[0], 1)


@pytest.mark.integration
class PostgreSQLSearchIndexTests(SearchIndexTests, SynchronousTestCase):
    case_sensitive = True

    @pytest.fixture(autouse=True)
    def _database(self, postgresql) -> None:
        self.url = postgresql.create_database()

    def make_index(self) -> SearchIndex:
        return SearchIndex(InlineConnectionPool("psycopg", self.url), POSTGRESQL, "test database")

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url) as connection:
            cursor = connection.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def test_schema_is_091s(self) -> None:
        """The columns and constraints SQLAlchemy gave 0.9.1's models on PostgreSQL."""
        self.opened()
        columns = self.execute(
            "SELECT table_name, column_name, data_type, character_maximum_length,"
            " is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        )
        self.assertEqual(columns, [
            ("repository", "id", "integer", None, "NO",
             "nextval('repository_id_seq'::regclass)"),
            ("repository", "name", "character varying", 95, "NO", None),
            ("repository", "description", "character varying", 100, "YES", None),
            ("version", "id", "integer", None, "NO", "nextval('version_id_seq'::regclass)"),
        ])
        constraints = self.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
            " ORDER BY 1, 2"
        )
        self.assertEqual(constraints, [
            ("repository", "p", "PRIMARY KEY (id)"),
            ("repository", "u", "UNIQUE (name)"),
            ("version", "p", "PRIMARY KEY (id)"),
        ])

    def test_names_too_long_for_the_column_are_skipped(self) -> None:
        index = self.opened()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        long_key = "foo/" + "x" * 92
        self.call(index.register(long_key))
        self.assertEqual(self.call(index.populate([long_key, "foo/short"])), 1)
        self.assertEqual(self.rows(index), [("foo/short", None)])
        self.assertEqual([e["name"] for e in events if e.get("length") == 95], [long_key] * 2)
        self.call(index.register("foo/" + "x" * 91))
        self.assertEqual(self.search(index, "xxx")[0], 1)


class SlowStorage(LocalStorage):
    """Local storage whose listings take C{delay} seconds of C{clock}."""

    def __init__(self, root: str, clock: Clock, delay: float) -> None:
        super().__init__(root)
        self._clock = clock
        self._delay = delay

    def list_directory(self, key: str) -> defer.Deferred[list[str]]:
        self._clock.advance(self._delay)
        return super().list_directory(key)


class WalkTests(TemporaryDirectories, SynchronousTestCase):
    def walk(self, root: str) -> list[str]:
        return self.successResultOf(defer.ensureDeferred(walk(LocalStorage(root), Clock())))

    def test_rows_are_named_by_repository_key(self) -> None:
        root = self.temporary_directory()
        write_tree(root, {
            "repositories/foo/ab%2525%2524_-test/tag_latest": "id",
            "repositories/library/ubuntu/_index_images": "[]",
            "repositories/a/b%252Fc/json": "{}",
            "repositories/foo/my%2Brepo/_private": "",
            "repositories/foo/a%257Eb/tag_x": "id",
            "repositories/my+ns/x/tag_x": "id",
            "repositories/foo/stray-file": "",
            "images/0123456789abcdef/json": "{}",
        })
        os.makedirs(os.path.join(root, "repositories/foo/emptied"))
        keys = self.walk(root)
        self.assertEqual(keys, [
            "a/b%2Fc", "foo/a%7Eb", "foo/ab%25%24_-test", "foo/my+repo", "library/ubuntu",
            "my ns/x",
        ])
        # The keys the routes index (R13, R22 name rows by Repository.key).
        names = ["a/b/c", "foo/a~b", "foo/ab%$_-test", "foo/my repo", "ubuntu", "my ns/x"]
        self.assertEqual([parse_repository(name).key for name in names], keys)

    def test_no_repositories(self) -> None:
        self.assertEqual(self.walk(self.temporary_directory()), [])

    def test_hands_the_reactor_back(self) -> None:
        """A walk listing for longer than a time slice lets the reactor run in between."""
        root = self.temporary_directory()
        write_tree(root, {f"repositories/foo/r{i}/tag_x": "id" for i in range(10)})
        clock = Clock()
        d = defer.ensureDeferred(walk(SlowStorage(root, clock, 0.004), clock))
        self.assertNoResult(d)
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [0.012])
        clock.advance(0)
        self.assertEqual(self.successResultOf(d), [f"foo/r{i}" for i in range(10)])


class OpenSearchIndexTests(TemporaryDirectories, SynchronousTestCase):
    """§9 Enabling: which database the settings name."""

    def settings(self, text: str):
        directory = self.temporary_directory()
        path = config_file(directory, text)
        return load_settings(path, "dev", environ={}, system_config_path=None)

    def open(self, text: str) -> SearchIndex | None:
        index = open_search_index(self.settings(text), _InlineReactor())
        if index is not None:
            self.addCleanup(index.close)
        return index

    def description(self, text: str) -> str:
        return self.open(text).description

    def test_disabled(self) -> None:
        self.assertIsNone(self.open("dev: {}"))
        self.assertIsNone(self.open("dev: {search_backend: solr}"))

    def test_default_file_in_local_storage(self) -> None:
        storage = os.path.join(self.temporary_directory(), "new", "storage")
        for backend in ("sqlalchemy", "SQLite"):
            self.assertEqual(
                self.description(f"dev: {{search_backend: {backend}, storage_path: {storage}}}"),
                f"SQLite database {storage}/docker-registry.db",
            )
        self.assertTrue(os.path.isdir(storage))

    def test_default_file_for_s3(self) -> None:
        self.assertEqual(
            self.description("dev: {search_backend: sqlalchemy, storage: s3}"),
            "SQLite database /tmp/docker-registry.db",
        )

    def test_sqlite_urls(self) -> None:
        directory = self.temporary_directory()
        self.assertEqual(
            self.description(f"dev: {{search_backend: sqlalchemy,"
                             f" sqlalchemy_index_database: 'sqlite:///{directory}/a.db'}}"),
            f"SQLite database {directory}/a.db",
        )
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(directory)
        self.assertEqual(
            self.description("dev: {search_backend: sqlalchemy,"
                             " sqlalchemy_index_database: 'sqlite:///sub/b.db'}"),
            f"SQLite database {directory}/sub/b.db",
        )
        self.assertEqual(
            self.description("dev: {search_backend: sqlite, search_database: 'sqlite://'}"),
            "SQLite database :memory:",
        )

    @skipIf(
        not any(importlib.util.find_spec(name) for name in search.DRIVERS),
        "no PostgreSQL client library (psycopg, psycopg2) installed",
    )
    def test_postgresql_urls(self) -> None:
        for url in ("postgresql://u:secret@db.example:5433/registry",
                    "postgres://u:secret@db.example:5433/registry",
                    "postgresql+psycopg2://u:secret@db.example:5433/registry"):
            self.assertEqual(
                self.description(f"dev: {{search_backend: postgresql,"
                                 f" sqlalchemy_index_database: '{url}'}}"),
                "PostgreSQL database registry on db.example:5433",
            )

    def test_postgresql_needs_a_driver(self) -> None:
        self.patch(search, "DRIVERS", ("twistreg_no_such_driver",))
        with self.assertRaises(ConfigError) as caught:
            self.open("dev: {search_backend: sqlalchemy,"
                      " sqlalchemy_index_database: 'postgresql://h/db'}")
        self.assertEqual(
            str(caught.exception),
            "a PostgreSQL search index needs the psycopg client library"
            " (pip install 'twistreg[postgresql]')",
        )

    def test_postgresql_needs_a_url(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.open("dev: {search_backend: postgresql}")
        self.assertIn("needs sqlalchemy_index_database", str(caught.exception))

    def test_unsupported_urls(self) -> None:
        for url, message in (
            ("mysql://u:secret@h/db", "unsupported database URL 'mysql://u:***@h/db'"),
            ("sqlite://host/x.db", "names a host"),
            ("sqlite:////x.db?mode=ro", "options are not supported"),
            ("nonsense", "unsupported database URL"),
        ):
            with self.assertRaises(ConfigError) as caught:
                self.open(f"dev: {{search_backend: sqlite, search_database: '{url}'}}")
            self.assertIn(message, str(caught.exception))
            self.assertNotIn("secret", str(caught.exception))


class SearchRouteTests(TemporaryDirectories, SynchronousTestCase):
    """R26 through HTTP, in memory: the registry's own routes over a search index."""

    def setUp(self) -> None:
        directory = self.temporary_directory()
        # Search disabled in the settings, so the app mounts no index of its own.
        settings = load_settings(
            config_file(directory, "dev: {standalone: true}"), "dev",
            overrides={"storage_path": directory}, environ={}, system_config_path=None,
        )
        self.database = os.path.join(directory, "search.db")
        pool = InlineConnectionPool("sqlite3", self.database, check_same_thread=False)
        self.search_index = SearchIndex(pool, SQLITE, "test database")
        self.addCleanup(self.search_index.close)
        registry = attrs.evolve(build_registry(settings, Clock()), search=self.search_index)
        self.stub = StubTreq(registry_resource(registry))

    def fetch(self, path: str, method: str = "GET", headers: dict | None = None):
        """One request: the response and its body."""
        response = self.successResultOf(
            self.stub.request(method, "http://registry" + path, headers=headers)
        )
        return response, self.successResultOf(response.content())

    def fill(self) -> None:
        index = self.search_index
        self.successResultOf(index.open())
        self.successResultOf(index.register("foo/bar"))
        self.successResultOf(index.populate(["library/ubuntu"]))
        for i in range(3):
            self.successResultOf(index.register(f"paged/r{i}"))

    def assert_json(self, response, body: bytes, status: int, expected: bytes) -> None:
        self.assertEqual((response.code, body), (status, expected))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("Content-Type"), ["application/json"])
        self.assertEqual(headers.getRawHeaders("Cache-Control"), ["no-cache"])
        self.assertEqual(response.length, len(expected))  # Content-Length

    def test_contract_examples(self) -> None:
        self.fill()
        self.assert_json(*self.fetch("/v1/search?q=bar"), 200, BAR_ANSWER)
        self.assert_json(*self.fetch("/v1/search?q=zzzznotfound"), 200,
                         b'{"num_results": 0, "query": "zzzznotfound", "results": []}')

    def test_query_defaults_and_decoding(self) -> None:
        self.fill()
        _, body = self.fetch("/v1/search")
        answer = json.loads(body)
        self.assertEqual((answer["num_results"], answer["query"]), (5, ""))
        self.assertEqual(answer["results"][1], {"description": None, "name": "library/ubuntu"})
        for query, decoded, count in (("o%2Fb", "o/b", 1), ("foo+bar", "foo bar", 0),
                                      ("%25", "%", 5), ("u&q=bar", "u", 1), ("%FF", "\ufffd", 0)):
            answer = json.loads(self.fetch(f"/v1/search?q={query}")[1])
            self.assertEqual((answer["query"], answer["num_results"]), (decoded, count))

    def test_paging(self) -> None:
        self.fill()
        _, body = self.fetch("/v1/search?q=paged&n=2&page=2")
        self.assertEqual(json.loads(body), {
            "num_results": 3, "query": "paged",
            "results": [{"description": "", "name": "paged/r2"}],
        })
        _, body = self.fetch("/v1/search?q=paged&n=2")
        self.assertEqual([r["name"] for r in json.loads(body)["results"]],
                         ["paged/r0", "paged/r1"])
        _, body = self.fetch("/v1/search?q=paged&page=1&n=100&n=x")
        self.assertEqual(json.loads(body)["num_results"], 3)

    def test_invalid_paging(self) -> None:
        self.fill()
        for query in ("n=0", "n=101", "n=abc", "n=", "n=-1", "n=2.5", "n=+5", "n=%EF%BC%95",
                      "n=1_0", "page=0", "page=x", "page=", "q=a&page=-2"):
            self.assert_json(*self.fetch(f"/v1/search?{query}"), 400,
                             b'{"error": "Invalid paging parameters"}')

    def test_head_and_options(self) -> None:
        self.fill()
        response, body = self.fetch("/v1/search?q=bar", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/json"])
        response, body = self.fetch("/v1/search", method="OPTIONS")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("Allow"), ["GET, HEAD, OPTIONS"])
        response, body = self.fetch("/v1/search", method="POST")
        self.assert_json(response, body, 405, b'{"error": "Method not allowed"}')

    def test_read_error_is_500(self) -> None:
        self.fill()
        with sqlite3.connect(self.database) as connection:
            connection.execute("DROP TABLE repository")
        self.assert_json(*self.fetch("/v1/search?q=bar"), 500,
                         b'{"error": "Internal server error"}')
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)

    def test_docker_search(self) -> None:
        """
        Exactly what C{docker search HOST:PORT/bar} sends (dockerd 20.10, seen by a logging
        stub in operations.md §4.1), and the answer shape it decodes.
        """
        self.fill()
        headers = {
            "User-Agent": "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84"
                          " kernel/6.1.0 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2)",
            "X-Docker-Token": "true",
        }
        response, body = self.fetch("/v1/_ping", headers=headers)
        self.assertEqual((response.code, body), (200, b"{}"))
        response, body = self.fetch("/v1/search?q=bar&n=25", headers=headers)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/json"])
        answer = json.loads(body)
        self.assertEqual(sorted(answer), ["num_results", "query", "results"])
        self.assertEqual((answer["num_results"], answer["query"]), (1, "bar"))
        self.assertEqual(answer["results"], [{"description": "", "name": "foo/bar"}])
        for result in answer["results"]:
            self.assertEqual(sorted(result), ["description", "name"])


class ReindexCommandTests(TemporaryDirectories, SynchronousTestCase):
    """C{python -m twistreg reindex}, as an operator runs it."""

    def run_reindex(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("DOCKER_REGISTRY_CONFIG", None)
        env.pop("SETTINGS_FLAVOR", None)
        return subprocess.run(
            [sys.executable, "-m", "twistreg", "reindex", *args], cwd=self.temporary_directory(),
            env=env, capture_output=True, text=True, timeout=60,
        )

    def setUp(self) -> None:
        self.storage = self.temporary_directory()
        self.database = os.path.join(self.storage, "docker-registry.db")
        self.config = config_file(self.temporary_directory(), """
            common: &common
              standalone: true
            dev:
              <<: *common
              search_backend: sqlalchemy
            nosearch:
              <<: *common
        """)

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT name, description FROM repository"
                                      " ORDER BY id").fetchall()

    def test_rebuilds_from_storage(self) -> None:
        write_tree(self.storage, {
            "repositories/foo/bar/tag_latest": "id",
            "repositories/library/ubuntu/_index_images": "[]",
        })
        with sqlite3.connect(self.database) as connection:
            for _type, _name, _table, sql in SCHEMA_091[:2]:
                connection.execute(sql)
            connection.execute("INSERT INTO version (id) VALUES (1)")
            connection.execute("INSERT INTO repository (name, description) VALUES"
                               " ('gone/away', '')")
        result = self.run_reindex("--config", self.config, "--storage-path", self.storage)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"reindexed 2 repositories in SQLite database {self.database}\n", ""),
        )
        self.assertEqual(self.rows(), [("foo/bar", None), ("library/ubuntu", None)])

    def test_creates_a_missing_index(self) -> None:
        write_tree(self.storage, {"repositories/foo/bar/tag_latest": "id"})
        result = self.run_reindex("--config", self.config, "--storage-path", self.storage)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"reindexed 1 repository in SQLite database {self.database}\n", ""),
        )
        self.assertEqual(self.rows(), [("foo/bar", None)])

    def test_errors_are_one_line(self) -> None:
        result = self.run_reindex("--config", self.config, "--flavor", "nosearch",
                                  "--storage-path", self.storage)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (1, "", "twistreg reindex: search is disabled: the config sets no search_backend\n"),
        )
        with sqlite3.connect(self.database) as connection:
            connection.execute("CREATE TABLE version (id INTEGER NOT NULL PRIMARY KEY)")
            connection.execute("INSERT INTO version (id) VALUES (7)")
        result = self.run_reindex("--config", self.config, "--storage-path", self.storage)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (1, "", f"twistreg reindex: SQLite database {self.database}:"
                    " unrecognized search index version 7\n"),
        )
        result = self.run_reindex("--config", os.path.join(self.storage, "missing.yml"))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("cannot read config file", result.stderr)
