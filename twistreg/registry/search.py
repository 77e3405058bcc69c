# -*- test-case-name: tests.test_search -*-
"""
The search index (docs/api.md): one row per repository key, in the database 0.9.1 used.

The schema is 0.9.1's, byte for byte as its SQLAlchemy models created it, so either server can
use the same database.  SQL runs through L{twisted.enterprise.adbapi}: stdlib C{sqlite3} by
default, C{psycopg} (or C{psycopg2}) for PostgreSQL, never in the reactor thread.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import attrs
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistreg.config import ConfigError, Settings
from twistreg.layout import REPOSITORIES, key_of_directory
from twistreg.storage.interface import IStorage
from twistreg.walking import Pace, Progress, Silent

log = Logger()

#: The only schema version there is (0.9.1's C{SQLAlchemyIndex.version}).
VERSION = 1
#: The file name §9 gives when no database URL is configured.
DEFAULT_DATABASE_NAME = "docker-registry.db"
#: The database of non-local storage when no URL is configured (0.9.1's sample default).
FALLBACK_DATABASE = "/tmp/docker-registry.db"
#: The PostgreSQL client libraries used, in order of preference.
DRIVERS = ("psycopg", "psycopg2")
#: C{VARCHAR(95)} of the C{name} column: PostgreSQL refuses longer names, SQLite stores them.
NAME_LENGTH = 95

# The DDL SQLAlchemy 0.9.4 emitted for 0.9.1's models (captured from it), so that sqlite_master
# reads the same whichever server created the file.  {id} is INTEGER or SERIAL.
_CREATE_VERSION = "CREATE TABLE version (\n\tid {id} NOT NULL, \n\tPRIMARY KEY (id)\n)"
_CREATE_REPOSITORY = (
    "CREATE TABLE repository (\n\tid {id} NOT NULL, \n\tname VARCHAR(95) NOT NULL, "
    "\n\tdescription VARCHAR(100), \n\tPRIMARY KEY (id), \n\tUNIQUE (name)\n)"
)
# An arbitrary constant naming the PostgreSQL advisory lock taken while the schema is created.
_SCHEMA_LOCK = 0x74776973_74726567


@attrs.frozen
class Dialect:
    """
    What differs between the databases: parameter style, DDL, how schema creation is
    serialised across processes, which names fit.

    @ivar lock: the statement that opens C{open()}'s transaction and holds other processes
        off until it commits.
    @ivar has_version_table: a query returning a row when the C{version} table exists.
    """

    placeholder: str
    id_type: str
    lock: str
    has_version_table: str
    limits_names: bool

    def sql(self, text: str) -> str:
        """C{text} written with C{?} placeholders, in this database's parameter style."""
        return text.replace("?", self.placeholder)

    def storable(self, name: str) -> bool:
        """Whether the C{name} column can hold C{name} (PostgreSQL enforces VARCHAR(95))."""
        return not self.limits_names or len(name) <= NAME_LENGTH


SQLITE = Dialect(
    placeholder="?",
    id_type="INTEGER",
    # Takes the write lock at once: a second process waits here, then sees the tables.
    lock="BEGIN IMMEDIATE",
    has_version_table="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'version'",
    limits_names=False,
)

POSTGRESQL = Dialect(
    placeholder="%s",
    id_type="SERIAL",
    lock=f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})",
    has_version_table="SELECT 1 WHERE to_regclass('version') IS NOT NULL",
    limits_names=True,
)

_INSERT = "INSERT INTO repository (name, description) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
_UPSERT = (
    "INSERT INTO repository (name, description) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET description = excluded.description"
)
_DELETE = "DELETE FROM repository WHERE name = ?"
_MATCH = " WHERE name LIKE ? OR description LIKE ?"
# SQLite and PostgreSQL both take a 64-bit OFFSET; beyond it every page is empty anyway.
_MAX_OFFSET = 2**62


class SearchIndex:
    """
    The repository index behind R26, kept up to date by R13, R15 and R22.

    Writes never fail their caller: a route's answer does not depend on the index (§4.1), so
    failures are logged and swallowed.  Reads raise, and the route answers 500.

    @param pool: a connection pool on the database; for SQLite it must hold one connection,
        so that this process's writes queue instead of contending for the file's lock.
    @ivar description: the database in words, for logs (never a password).
    """

    def __init__(self, pool: adbapi.ConnectionPool, dialect: Dialect, description: str) -> None:
        self._pool = pool
        self._dialect = dialect
        self.description = description

    def open(self) -> defer.Deferred[bool]:
        """
        Create the schema unless it exists, once however many processes start together.

        @return: a Deferred firing with True when this call created the schema (the caller
            then fills it from storage, in the background), False when it existed.  It
            fails with L{ConfigError} (C{unrecognized search index version <n>}) for a
            database of another version, and with the driver's error when the database
            cannot be used.
        """
        return self._pool.runInteraction(self._open)

    def _open(self, cursor: Any) -> bool:
        dialect = self._dialect
        cursor.execute(dialect.lock)
        cursor.execute(dialect.has_version_table)
        created = cursor.fetchone() is None
        if created:
            cursor.execute(_CREATE_VERSION.format(id=dialect.id_type))
            cursor.execute(_CREATE_REPOSITORY.format(id=dialect.id_type))
            version = None
        else:
            cursor.execute("SELECT max(id) FROM version")
            (version,) = cursor.fetchone()
        # As 0.9.1: an empty version table counts as a new index (its rows get the version).
        if version is None:
            cursor.execute(dialect.sql("INSERT INTO version (id) VALUES (?)"), (VERSION,))
            return True
        if version != VERSION:
            raise ConfigError(f"unrecognized search index version {version}")
        return False

    @property
    def database_error(self) -> type[Exception]:
        """The driver's base exception: what an unusable database raises (C{sqlite3.Error}...)."""
        return self._pool.dbapi.Error

    def ping(self) -> defer.Deferred[Any]:
        """A trivial query: whether the database answers (C{/_health})."""
        return self._pool.runQuery("SELECT 1")

    def close(self) -> None:
        """Close the database connections and stop the pool's threads."""
        self._pool.close()

    # -- row updates (§9): never fail --------------------------------------------------------

    def register(self, key: str) -> defer.Deferred[None]:
        """R13, and R22 on a new repository: index C{key} (description C{""}) if absent."""
        return self._write("registering", key, _INSERT, (key, ""))

    def set_pushed(self, key: str) -> defer.Deferred[None]:
        """R22 on a repository with an image list: its description becomes C{""}."""
        return self._write("updating", key, _UPSERT, (key, ""))

    def remove(self, key: str) -> defer.Deferred[None]:
        """R15: forget C{key}."""
        return self._write("removing", key, _DELETE, (key,))

    def _write(self, action: str, key: str, sql: str, args: tuple) -> defer.Deferred[None]:
        if not self._dialect.storable(key):
            log.warn(
                "search index: not {action} {name}: longer than {length} characters",
                action=action, name=key, length=NAME_LENGTH,
            )
            return defer.succeed(None)
        d = self._pool.runOperation(self._dialect.sql(sql), args)
        d.addErrback(
            lambda failure: log.failure(
                "search index: {action} {name} failed", failure, action=action, name=key
            )
        )
        return d

    # -- filling ------------------------------------------------------------------------------

    def populate(self, keys: Iterable[str]) -> defer.Deferred[int]:
        """
        Index every key not indexed yet (description null): the start-up walk's rows.  Rows
        the routes added meanwhile are kept.

        @return: a Deferred firing with the number of rows added.
        """
        return self._pool.runInteraction(self._insert_all, self._storable(keys))

    def rebuild(self, keys: Iterable[str]) -> defer.Deferred[int]:
        """
        Replace every row with C{keys} (description null), in one transaction: what the
        index would hold had it just been created over the current storage.

        @return: a Deferred firing with the number of rows.
        """
        return self._pool.runInteraction(self._replace_all, self._storable(keys))

    def _storable(self, keys: Iterable[str]) -> list[str]:
        # A name the column refuses would abort the whole transaction on PostgreSQL.
        kept = []
        for key in keys:
            if self._dialect.storable(key):
                kept.append(key)
            else:
                log.warn(
                    "search index: not indexing {name}: longer than {length} characters",
                    name=key, length=NAME_LENGTH,
                )
        return kept

    def _insert_all(self, cursor: Any, keys: list[str]) -> int:
        # Counted, not summed from rowcount: drivers disagree on it after executemany.
        before = self._count(cursor)
        if keys:
            cursor.executemany(self._dialect.sql(_INSERT), [(key, None) for key in keys])
        return self._count(cursor) - before

    def _replace_all(self, cursor: Any, keys: list[str]) -> int:
        cursor.execute("DELETE FROM repository")
        return self._insert_all(cursor, keys)

    @staticmethod
    def _count(cursor: Any) -> int:
        cursor.execute("SELECT count(*) FROM repository")
        return cursor.fetchone()[0]

    # -- query --------------------------------------------------------------------------------

    def search(
        self, query: str, n: int | None = None, page: int = 1
    ) -> defer.Deferred[tuple[int, list[tuple[str, str | None]]]]:
        """
        R26: the repositories whose name or description contains C{query}, in insertion
        order.  C{query} is a LIKE pattern fragment: C{%} and C{_} are wildcards, as in
        0.9.1; ASCII case is ignored on SQLite only.

        @param n: the page size (the contract allows 1–100); None for every match.
        @param page: which page, from 1.
        @return: a Deferred firing with C{(num_results, [(name, description), ...])}, where
            C{num_results} counts every match.  Count and page come from one database
            interaction.
        """
        return self._pool.runInteraction(self._search, query, n, page)

    def _search(
        self, cursor: Any, query: str, n: int | None, page: int
    ) -> tuple[int, list[tuple[str, str | None]]]:
        if "\x00" in query:
            # No name or description holds NUL, and SQLite would cut the pattern there.
            return 0, []
        where, args = ("", ()) if not query else (_MATCH, (f"%{query}%",) * 2)
        cursor.execute(self._dialect.sql("SELECT count(*) FROM repository" + where), args)
        (count,) = cursor.fetchone()
        select = "SELECT name, description FROM repository" + where + " ORDER BY id"
        if n is None:
            if page > 1 or count == 0:
                return count, []
        else:
            offset = min((page - 1) * n, _MAX_OFFSET)
            if offset >= count:
                return count, []
            select += " LIMIT ? OFFSET ?"
            args += (n, offset)
        cursor.execute(self._dialect.sql(select), args)
        return count, [(name, description) for name, description in cursor.fetchall()]


async def walk(storage: IStorage, clock: IReactorTime,
               progress: Progress | None = None) -> list[str]:
    """
    The repository key of every repository in C{storage}: each non-empty
    C{repositories/<ns>/<repo>} directory, in listing order (§9 Startup).

    Local storage lists directories in the reactor thread; tens of thousands of them would
    stop serving for a while (seconds on a cold cache), so the walk hands the reactor back
    as it goes (L{Pace}).

    @param progress: told of each namespace walked.
    """
    pace = Pace(clock)
    progress = Silent() if progress is None else progress
    keys = []
    namespaces = await storage.list_directory(REPOSITORIES)
    progress.phase("namespaces", len(namespaces))
    for namespace in namespaces:
        directory = f"{REPOSITORIES}/{namespace}"
        for name in await storage.list_directory(directory):
            # An empty directory is no repository (§7.1); a file lists as empty.
            if await storage.list_directory(f"{directory}/{name}"):
                keys.append(key_of_directory(namespace, name))
            await pace.breathe()
        progress.advance(f"{len(keys)} repositories")
    return keys


# -- choosing the database (§9 Enabling) ----------------------------------------------------------


def open_search_index(settings: Settings, reactor) -> SearchIndex | None:
    """
    The index C{settings} ask for, not opened yet (see L{SearchIndex.open}); None when search
    is disabled.

    @raise ConfigError: the database URL is not usable, C{postgresql} is asked for without
        one, or PostgreSQL's client library is missing.
    """
    if settings.search_backend is None:
        return None
    url = settings.search_database
    if url is None:
        if settings.search_backend == "postgresql":
            raise ConfigError(
                "search_backend postgresql needs sqlalchemy_index_database"
                " (a postgresql://user:password@host:port/database URL)"
            )
        if settings.storage == "local":
            return sqlite_index(os.path.join(settings.storage_path, DEFAULT_DATABASE_NAME), reactor)
        return sqlite_index(FALLBACK_DATABASE, reactor)
    scheme, separator, rest = url.partition("://")
    dialect = scheme.split("+", 1)[0].lower() if separator else ""
    if dialect == "sqlite":
        return sqlite_index(_sqlite_path(url, rest), reactor)
    if dialect in ("postgresql", "postgres"):
        return postgresql_index("postgresql://" + rest, reactor)
    raise ConfigError(
        f"config key sqlalchemy_index_database: unsupported database URL {_redact(url)!r}"
        " (supported: sqlite:///path, postgresql://...)"
    )


def _sqlite_path(url: str, rest: str) -> str:
    """The file of C{sqlite:///relative} or C{sqlite:////absolute} (SQLAlchemy's rules)."""
    path, question, _ = rest.partition("?")
    if question:
        raise ConfigError(
            f"config key sqlalchemy_index_database: options are not supported in {url!r}"
        )
    if path in ("", "/", "/:memory:"):
        return ":memory:"
    if not path.startswith("/"):
        raise ConfigError(
            f"config key sqlalchemy_index_database: {url!r} names a host; use"
            " sqlite:////absolute/path.db or sqlite:///relative/path.db"
        )
    return os.path.abspath(path[1:])


def sqlite_index(path: str, reactor) -> SearchIndex:
    """
    An index in the SQLite file C{path} (created with its directory when missing; a relative
    path is relative to the working directory), through one connection: this process's
    writes queue instead of contending for the file.
    """
    if path != ":memory:":
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    pool = adbapi.ConnectionPool(
        "sqlite3", path, check_same_thread=False,
        cp_min=1, cp_max=1, cp_reactor=reactor, cp_noisy=False,
    )
    return SearchIndex(pool, SQLITE, f"SQLite database {path}")


def postgresql_index(url: str, reactor) -> SearchIndex:
    """
    An index in the PostgreSQL database of C{url} (C{postgresql://user:password@host:port/db},
    libpq's URI: options such as C{?sslmode=require} pass through), through psycopg 3, or
    psycopg2 when only that is installed.

    @raise ConfigError: neither client library is installed.
    """
    driver = next((name for name in DRIVERS if importlib.util.find_spec(name) is not None), None)
    if driver is None:
        raise ConfigError(
            "a PostgreSQL search index needs the psycopg client library"
            " (pip install 'twistreg[postgresql]')"
        )
    parts = urlsplit(url)
    options = {}
    if "connect_timeout" not in parse_qs(parts.query):
        # libpq waits for an unreachable host as long as TCP does: minutes.
        options["connect_timeout"] = 10
    pool = adbapi.ConnectionPool(
        driver, url, **options, cp_reconnect=True, cp_reactor=reactor, cp_noisy=False
    )
    return SearchIndex(pool, POSTGRESQL, f"PostgreSQL database {_describe_postgresql(parts)}")


def _describe_postgresql(parts: SplitResult) -> str:
    """C{<database> on <host>:<port>} from a URI, without user or password."""
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host") or "local socket"
    port = f":{parts.port}" if parts.port else ""
    database = parts.path.lstrip("/") or query.get("dbname") or "(default database)"
    return f"{database} on {host}{port}"


def _redact(url: str) -> str:
    """C{url} with any password replaced by C{***}: URLs are shown in errors and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
