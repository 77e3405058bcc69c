# -*- test-case-name: tests.test_config,tests.test_service -*-
"""
Load the configuration (docs/configuration.md): the 0.9.1 flavored YAML file, C{_env:}
values and the command line's overrides, validated into one frozen L{Settings}.

This is the only module that reads environment variables, so a reload sees exactly what a start
would see.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import yaml
from twisted.logger import Logger

from twistreg.htpasswd import HtpasswdError, read_htpasswd

log = Logger()

SYSTEM_CONFIG_PATH = "/etc/twistreg/config.yml"
DEFAULT_FLAVOR = "dev"
DEFAULT_INDEX_ENDPOINT = "https://index.docker.io"
DEFAULT_LOCAL_STORAGE_PATH = "/tmp/registry"
DEFAULT_TOKEN_CACHE_TTL = 60.0
DEFAULT_UPSTREAM_TIMEOUT = 30.0
# WSGI threads per process: about what a typical database pool serves (SQLAlchemy's default
# is 5 connections plus 10 overflow); blocking I/O, not CPU, is what the threads wait on.
DEFAULT_WSGI_THREADS = 16
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# "sqlalchemy" is the 0.9.1 spelling; it means the same SQLite/PostgreSQL index.
SEARCH_BACKENDS = ("sqlalchemy", "sqlite", "postgresql")
MiB = 1024 * 1024
# S3 refuses parts under 5 MiB (but the last) and over 5 GiB; two parts are held per upload.
DEFAULT_S3_PART_SIZE = 8 * MiB
S3_PART_SIZES = (5 * MiB, 5 * 1024 * MiB)
DEFAULT_S3_TIMEOUT = 10.0
# 0.9.1 signed its layer redirects for 1,200 s.
DEFAULT_REDIRECT_EXPIRES = 1200.0
# A multipart upload older than this is left over from a node that died mid-push.
DEFAULT_UPLOAD_MAX_AGE = 86400.0
DEFAULT_CACHE_TTL = 3600.0
SUPPORTED_STORAGE = ("local", "s3")
#: The realm of the password challenge when C{auth.htpasswd.realm} is not set.
DEFAULT_REALM = "twistreg"
# A realm goes between quotes in WWW-Authenticate: printable ASCII, no quote or backslash.
_REALM = re.compile(r'[ !#-\[\]-~]+')
# The entry of a V2 index that V1 clients get, as os/architecture[/variant].
DEFAULT_BRIDGE_PLATFORM = ("linux", "amd64")
# Garbage collection spares what is younger: longer than any push takes to reference it.
DEFAULT_GC_GRACE = 3600.0
# A manifest no tag, index or kept subject reaches is kept this long after its push: a week.
DEFAULT_GC_UNTAGGED = 604800.0
DEFAULT_METRICS_PATH = "/metrics"

# The settings used when no config file is found (the "built-in" column of §10.2). Every key
# not listed here has the same built-in and "absent" value, so this mapping is simply loaded as
# if it were a flavor.
BUILTIN_FLAVOR: Mapping[str, Any] = MappingProxyType(
    {
        "issue": '"docker-registry server"',
        "loglevel": "info",
        "debug": False,
        "standalone": True,
        "search_backend": "sqlite",
        "storage": "local",
        "storage_path": DEFAULT_LOCAL_STORAGE_PATH,
    }
)

# Keys twistreg accepts but does not implement, each reported once when set (§10.2). For a group
# the dotted name is its enabling key; "cloudfront" counts as set when any of its keys is.
IGNORED_KEYS = (
    "privileged_key",
    "email_exceptions.smtp_host",
    "bugsnag",
    "cors.origins",
    "boto_debug",
    "boto_proxy",
    "boto_proxy_port",
    "boto_proxy_user",
    "boto_proxy_pass",
    "cloudfront",
)

_ENV_PREFIX = "_env:"


class ConfigError(Exception):
    """A startup error; C{str(e)} is the one line to print before exiting with status 1."""


@attrs.frozen
class ServerSettings:
    """
    The process model's settings (§10.3): twistreg's own C{server:} keys and their options.

    @ivar listen: Twisted server endpoint strings; empty means "listen on C{port}".
    @ivar workers: worker processes; C{None} means one per CPU, resolved by the caller, and
        0 serves in the main process.
    @ivar access_log: a path, or C{"-"} for stdout; C{None} for no access log.
    @ivar max_worker_memory: resident MiB above which a worker is recycled; 0 is off.
    @ivar wsgi: C{module:callable} of a WSGI application to host, or C{None}.
    @ivar wsgi_mount: the path prefix the WSGI application answers under; C{"/"} gives it the
        whole site, and the registry is not served.
    @ivar threads: the WSGI application's threads per process.
    @ivar trusted_proxies: addresses and networks (and C{unix}, C{*}) whose
        C{X-Forwarded-For}/C{-Proto} the WSGI application is given as its client's.
    """

    port: int = 5000
    listen: tuple[str, ...] = ()
    workers: int | None = None
    wsgi: str | None = None
    max_requests: int = 0
    max_requests_jitter: int = 0
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    pidfile: str | None = None
    access_log: str | None = None
    max_worker_memory: int = 0
    wsgi_mount: str = "/"
    threads: int = DEFAULT_WSGI_THREADS
    trusted_proxies: tuple[str, ...] = ()

    @property
    def serves_registry(self) -> bool:
        """Whether the registry routes are served: not when a WSGI application has the root."""
        return self.wsgi is None or self.wsgi_mount != "/"

    def endpoints(self) -> tuple[str, ...]:
        """The endpoint strings to listen on: C{listen} wins, else all interfaces on C{port}."""
        return self.listen if self.listen else (f"tcp:{self.port}",)


@attrs.frozen
class S3Settings:
    """
    The C{storage: s3} keys (docs/storage.md), as 0.9.1 read them, plus twistreg's own.

    @ivar bucket: C{s3_bucket}, else C{boto_bucket}; C{None} is refused when the server starts.
    @ivar region: C{s3_region}; null means C{us-east-1}.
    @ivar access_key: with C{secret_key}; both C{None} means the usual AWS credential chain.
    @ivar secure: C{s3_secure}: HTTPS. Absent means HTTPS (0.9.1 fell back to plain HTTP).
    @ivar host: C{boto_host}, a custom endpoint; C{None} is AWS's for the region.
    @ivar path_style: C{boto_calling_format} names C{OrdinaryCallingFormat}: the bucket goes in
        the path, not the host name.
    @ivar prefix: C{storage_path} without its leading C{/}: the start of every object key.
    @ivar part_size: C{s3_part_size}: bytes per part of a multipart layer upload.
    @ivar timeout: C{s3_timeout}: seconds S3 may stay silent before the request fails.
    @ivar redirect_expires: C{storage_redirect_expires}: seconds a redirect URL stays valid.
    @ivar upload_max_age: C{s3_upload_max_age}: seconds after which an unfinished multipart
        upload is a crashed node's and is aborted.
    """

    bucket: str | None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = attrs.field(default=None, repr=False)
    secure: bool = True
    encrypt: bool = False
    host: str | None = None
    port: int | None = None
    path_style: bool = False
    prefix: str = ""
    part_size: int = DEFAULT_S3_PART_SIZE
    timeout: float = DEFAULT_S3_TIMEOUT
    redirect_expires: float = DEFAULT_REDIRECT_EXPIRES
    upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE


@attrs.frozen
class RedisSettings:
    """
    A Redis server: C{cache} (what nodes share) or C{cache_lru} (small-object cache).

    @ivar ttl: seconds a cached value lives (C{cache_lru.ttl}).
    """

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = attrs.field(default=None, repr=False)
    ttl: float = DEFAULT_CACHE_TTL


@attrs.frozen
class PasswordSettings:
    """
    C{auth: {htpasswd: ...}}: the users who may use the registry (docs/configuration.md).

    @ivar path: the htpasswd file, read when the configuration is loaded (start and HUP).
    @ivar realm: the realm of the C{Basic} challenge.
    @ivar readers: the users who may only read.
    @ivar users: each user's bcrypt hash, from the file.
    """

    path: str
    realm: str = DEFAULT_REALM
    readers: frozenset[str] = frozenset()
    users: Mapping[str, bytes] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class GCSettings:
    """
    The C{gc:} keys: garbage collection in the server and the rules of every collection.

    @ivar interval: seconds between two collections in the server; C{None}: none there (the
        command still runs).
    @ivar grace: nothing written less than this many seconds ago is removed.
    @ivar untagged: seconds a manifest nothing reaches is kept after it was pushed (never
        less than C{grace}).
    """

    interval: float | None = None
    grace: float = DEFAULT_GC_GRACE
    untagged: float = DEFAULT_GC_UNTAGGED


@attrs.frozen
class MetricsSettings:
    """
    The C{metrics:} keys: Prometheus metrics of every process of the node (docs/operations.md).

    @ivar enabled: off unless asked for: the page tells anyone who can reach it how the
        registry is used, and it answers without authentication.
    @ivar path: where the page is served.
    @ivar listen: a Twisted endpoint string of its own (then only there, served by the master
        of a pool or by the single process); C{None}: on the registry's own listeners.
    """

    enabled: bool = False
    path: str = DEFAULT_METRICS_PATH
    listen: str | None = None


@attrs.frozen
class Settings:
    """
    Everything the registry needs from its configuration, validated once at load time.

    C{raw} and the mappings inside it are read-only views, and YAML lists
    inside them are tuples, so a loaded configuration cannot be changed by accident.

    @ivar flavor: the selected flavor (reported by R1 in debug mode).
    @ivar config_path: the absolute path of the file loaded; C{None} for the built-in defaults.
    @ivar search_backend: C{"sqlalchemy"}, C{"sqlite"} or C{"postgresql"}; C{None} when search is
        disabled.
    @ivar search_database: C{sqlalchemy_index_database} (or C{search_database}); C{None} when
        unset, in which case §9's default applies.
    @ivar index_timeout: seconds an index call may take before the answer is 502.
    @ivar mirroring_timeout: seconds the mirror's upstream may take to answer.
    @ivar storage: C{"local"}, C{"s3"}, or the lower-cased name of an unsupported driver, which
        L{require_supported_storage} rejects when the server starts.
    @ivar s3: the S3 keys when C{storage} is C{s3}, else C{None}.
    @ivar cache: the Redis that nodes share (token validations), or C{None}.
    @ivar cache_lru: the Redis small-object cache in front of storage, or C{None}.
    @ivar raw: the whole selected flavor after C{_env:} expansion (the built-in defaults when no
        file was found).
    @ivar v2: whether the V2 API (C{/v2/}) is served.
    @ivar v2_upload_max_age: seconds after which an unfinished V2 upload session is removed.
    @ivar readonly: every write is refused; reads go on.
    @ivar passwords: the htpasswd users, or C{None} when C{auth} is not set.
    @ivar gc: garbage collection (L{GCSettings}).
    @ivar metrics: Prometheus metrics (L{MetricsSettings}).
    @ivar bridge_platform: the entry of a V2 index that V1 clients are served: os,
        architecture and, when given, variant.
    """

    flavor: str
    config_path: str | None
    issue: str | None
    loglevel: str
    debug: bool
    standalone: bool
    index_endpoint: str
    disable_token_auth: bool
    storage_redirect: bool
    search_backend: str | None
    search_database: str | None
    registry_endpoints: str | None
    nginx_x_accel_redirect: str | None
    mirroring_source: str | None
    mirroring_source_index: str | None
    token_cache_ttl: float
    index_timeout: float
    mirroring_timeout: float
    storage: str
    storage_path: str
    s3: S3Settings | None
    cache: RedisSettings | None
    cache_lru: RedisSettings | None
    server: ServerSettings
    raw: Mapping[str, Any]
    v2: bool = True
    v2_upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE
    bridge_platform: tuple[str, ...] = DEFAULT_BRIDGE_PLATFORM
    gc: GCSettings = GCSettings()
    readonly: bool = False
    passwords: PasswordSettings | None = None
    metrics: MetricsSettings = MetricsSettings()


_SERVER_OVERRIDES = frozenset(f"server.{field.name}" for field in attrs.fields(ServerSettings))
_OVERRIDES = _SERVER_OVERRIDES | {"storage_path"}


def load_settings(
    config_file: str | None = None,
    flavor: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    system_config_path: str | None = SYSTEM_CONFIG_PATH,
) -> Settings:
    """
    Find, read and validate the configuration (§10.1), then apply the command line's values.

    @param config_file: C{--config}; a relative path is relative to the working directory.
    @param flavor: C{--flavor}.
    @param overrides: command-line values keyed C{"storage_path"} or C{"server.<field>"}
        (C{"server.listen"} a tuple); C{None} values and an empty listen mean "not given".
    @param environ: the environment (default C{os.environ}): C{DOCKER_REGISTRY_CONFIG},
        C{SETTINGS_FLAVOR} and every C{_env:} variable are read from it.
    @param system_config_path: the file used when neither C{config_file} nor
        C{$DOCKER_REGISTRY_CONFIG} names one, if it exists; C{None} skips it (tests).
    @raise ConfigError: the file or a value is unusable; the message is one line.
    @raise ValueError: C{overrides} has a key this function does not know (a programming error).
    """
    if environ is None:
        environ = os.environ
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - _OVERRIDES)
    if unknown:
        raise ValueError(f"unknown configuration overrides: {', '.join(unknown)}")
    flavor = flavor or environ.get("SETTINGS_FLAVOR") or DEFAULT_FLAVOR

    path = _find_config_file(config_file, environ, system_config_path)
    if path is None:
        section: Mapping[Any, Any] = BUILTIN_FLAVOR
    else:
        section = _read_flavor(path, flavor)
    raw = _expand(section, environ, "")
    _warn_ignored(raw)
    return _build(raw, flavor, path, given)


def require_supported_storage(settings: Settings) -> None:
    """
    Refuse a storage driver twistreg does not implement (§10.4).

    Loading accepts any C{storage} so that every flavor of the stock 0.9.1 file loads; only
    starting the server needs a driver, so the server calls this before it does.

    @raise ConfigError: C{settings.storage} is neither local (or file) nor s3.
    """
    if settings.storage not in SUPPORTED_STORAGE:
        raise ConfigError(
            f"storage driver '{settings.storage}' is not supported (supported: local, file, s3)"
        )


def load_application(
    name: str, what: str = "application", default: str | None = None
) -> Callable[..., Any]:
    """
    The callable C{module:attribute.path} names, imported as gunicorn does, with the working
    directory first on C{sys.path}: the WSGI application of C{server.wsgi}, the factory a
    worker of the pool builds its application with.

    @param what: what the name is for, in the error message (C{"WSGI application"}).
    @param default: the attribute C{module} alone means (C{"application"} for WSGI).
    @raise ConfigError: one line saying why it cannot be loaded (and where, when the
        module's own code failed).
    """
    module_name, _, attribute = name.partition(":")
    _working_directory_first()
    try:
        target: Any = importlib.import_module(module_name)
        path = attribute or default
        if not path:
            raise ValueError("no attribute named: use module:attribute")
        for part in path.split("."):
            target = getattr(target, part)
    except Exception as error:
        raise _cannot_load(name, what, error) from None
    if not callable(target):
        raise ConfigError(f"the {what} {name!r} is not callable")
    return target


def find_application(name: str, what: str = "application") -> None:
    """
    Check, without importing it, that the module of C{name} (as L{load_application} takes
    it) can be found: a cheap check for a process that will not run the application itself.
    Its parent packages are imported.

    @raise ConfigError: the same line L{load_application} would give for a missing module.
    """
    module_name = name.partition(":")[0]
    _working_directory_first()
    try:
        if importlib.util.find_spec(module_name) is None:
            raise ModuleNotFoundError(f"No module named {module_name!r}")
    except Exception as error:
        raise _cannot_load(name, what, error) from None


def _working_directory_first() -> None:
    """Where gunicorn looks first, and a worker started with C{-P} would not look at all."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _cannot_load(name: str, what: str, error: Exception) -> ConfigError:
    text = " ".join(str(error).split())
    return ConfigError(f"cannot load the {what} {name!r}: "
                       f"{type(error).__name__}: {text}{_where(error)}")


def _where(error: Exception) -> str:
    """Where in the application's own code C{error} was raised, when it was."""
    machinery = (os.path.dirname(importlib.__file__), __file__, "<")
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith(machinery)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


# -- finding and reading the file ---------------------------------------------------------------


def _find_config_file(
    config_file: str | None, environ: Mapping[str, str], system_config_path: str | None
) -> str | None:
    """The absolute path of the file to load, or C{None} for the built-in defaults."""
    named = config_file or environ.get("DOCKER_REGISTRY_CONFIG")
    if named:
        return os.path.abspath(named)
    if system_config_path and os.path.exists(system_config_path):
        return os.path.abspath(system_config_path)
    return None


def _read_flavor(path: str, flavor: str) -> Mapping[Any, Any]:
    """The selected flavor's mapping from the file at C{path}, before C{_env:} expansion."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from e
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from e
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"config file {path} must map flavor names to settings"
            f" (its top level is {_kind(document)})"
        )
    if flavor not in document:
        raise ConfigError(
            f"The specified flavor ({flavor}) is missing in your config file ({path})"
        )
    section = document[flavor]
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"flavor {flavor} in config file {path} must be a mapping, not {_kind(section)}"
        )
    return section


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line describing a YAML error: PyYAML's own text spans several lines."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        text = " ".join(part for part in (error.context, error.problem) if part)
        mark = error.problem_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
        return text
    return " ".join(str(error).split())


def _kind(value: object) -> str:
    """A short description of a YAML value's type for error messages."""
    if value is None:
        return "empty"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


# -- _env: expansion ----------------------------------------------------------------------------


def _expand(value: Any, environ: Mapping[str, str], key: str) -> Any:
    """
    Replace every C{_env:} string at any depth, building new containers.

    New containers matter: flavors merged from one anchor share the same nested objects.
    """
    if isinstance(value, str):
        return _expand_env(value, environ, key) if value.startswith(_ENV_PREFIX) else value
    if isinstance(value, Mapping):
        return {
            name: _expand(item, environ, f"{key}.{name}" if key else str(name))
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, environ, f"{key}[{index}]") for index, item in enumerate(value)]
    return value


def _expand_env(value: str, environ: Mapping[str, str], key: str) -> Any:
    """
    Resolve C{_env:NAME} or C{_env:NAME:default} (only the first two colons split) as 0.9.1 did:
    the variable, else the default, else C{''}, parsed as YAML.
    """
    parts = value.split(":", 2)
    name = parts[1]
    default = parts[2] if len(parts) == 3 else ""
    text = environ.get(name, default)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        # The text itself may be a secret (AWS_SECRET, SMTP_PASSWORD): name it, never show it.
        source = f"${name}" if name in environ else f"the default of ${name}"
        log.warn(
            "config key {key}: {source} is not valid YAML; using it as a plain string",
            key=key,
            source=source,
        )
        return text


# -- ignored keys -------------------------------------------------------------------------------


def _warn_ignored(raw: Mapping[Any, Any]) -> None:
    """Log one warning per supported-but-ignored key that is set; secrets are never logged."""
    names = list(IGNORED_KEYS)
    # tags_cache_ttl has a default in the stock file: it only matters when mirroring is on.
    if _is_set(_lookup(raw, "mirroring.source")):
        names.insert(1, "mirroring.tags_cache_ttl")
    for name in names:
        if _is_set(_lookup(raw, name)):
            log.warn("config key {key} is not supported and is ignored", key=name)


def _lookup(raw: Mapping[Any, Any], dotted: str) -> Any:
    """The value at a dotted key path, or C{None} when any part is absent or not a mapping."""
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _is_set(value: Any) -> bool:
    """
    Whether a value counts as set: truthy, or a mapping with a set value.

    The stock file leaves these keys null (or C{boto_debug} 0, which means "off" and is what
    twistreg does anyway), so truthiness reports exactly what an operator turned on.
    """
    if isinstance(value, Mapping):
        return any(_is_set(item) for item in value.values())
    return bool(value)


# -- building Settings --------------------------------------------------------------------------


def _build(
    raw: Mapping[Any, Any], flavor: str, path: str | None, given: Mapping[str, Any]
) -> Settings:
    """Validate the expanded flavor and apply the command line's values to it."""
    mirroring = _section(raw, "mirroring")
    storage = _storage_name(raw.get("storage"))
    if "storage_path" in given:
        storage_path = _text("option --storage-path", given["storage_path"])
    else:
        storage_path = _text("config key storage_path", raw.get("storage_path"))
    if not storage_path:
        storage_path = DEFAULT_LOCAL_STORAGE_PATH if storage == "local" else ""
    return Settings(
        flavor=flavor,
        config_path=path,
        issue=_text("config key issue", raw.get("issue"), empty=""),
        loglevel=_loglevel(raw.get("loglevel")),
        debug=bool(raw.get("debug")),
        standalone=bool(raw.get("standalone")),
        index_endpoint=(
            (_text("config key index_endpoint", raw.get("index_endpoint")) or "").rstrip("/")
            or DEFAULT_INDEX_ENDPOINT
        ),
        disable_token_auth=bool(raw.get("disable_token_auth")),
        storage_redirect=bool(raw.get("storage_redirect")),
        search_backend=_search_backend(raw.get("search_backend")),
        search_database=(
            _text("config key sqlalchemy_index_database", raw.get("sqlalchemy_index_database"))
            or _text("config key search_database", raw.get("search_database"))
        ),
        registry_endpoints=_registry_endpoints(raw.get("registry_endpoints")),
        nginx_x_accel_redirect=_text(
            "config key nginx_x_accel_redirect", raw.get("nginx_x_accel_redirect")
        ),
        mirroring_source=_text("config key mirroring.source", mirroring.get("source")),
        mirroring_source_index=_text(
            "config key mirroring.source_index", mirroring.get("source_index")
        ),
        token_cache_ttl=_seconds_or(
            "config key token_cache_ttl", raw.get("token_cache_ttl"), DEFAULT_TOKEN_CACHE_TTL
        ),
        index_timeout=_seconds_or("config key index_timeout", raw.get("index_timeout")),
        mirroring_timeout=_seconds_or("config key mirroring.timeout", mirroring.get("timeout")),
        storage=storage,
        storage_path=storage_path,
        s3=_s3(raw, storage_path) if storage == "s3" else None,
        cache=_redis(raw, "cache"),
        cache_lru=_redis(raw, "cache_lru"),
        server=_server(_section(raw, "server"), given),
        raw=_freeze(raw),
        v2=raw.get("v2") is None or bool(raw.get("v2")),
        v2_upload_max_age=_seconds_or("config key v2_upload_max_age",
                                      raw.get("v2_upload_max_age"), DEFAULT_UPLOAD_MAX_AGE),
        bridge_platform=_platform("config key bridge_platform", raw.get("bridge_platform")),
        gc=_gc(_section(raw, "gc")),
        readonly=bool(raw.get("readonly")),
        passwords=_passwords(_section(raw, "auth")),
        metrics=_metrics(_section(raw, "metrics")),
    )


def _metrics(section: Mapping[Any, Any]) -> MetricsSettings:
    """The C{metrics:} keys; the path is a plain path (no query), never C{/_health}."""
    path = _text("config key metrics.path", section.get("path")) or DEFAULT_METRICS_PATH
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path) or path == "/_health":
        raise ConfigError(f"config key metrics.path must be a path such as /metrics,"
                          f" not {path!r}")
    listen = _text("config key metrics.listen", section.get("listen"))
    return MetricsSettings(enabled=bool(section.get("enabled")), path=path,
                           listen=listen.strip() if listen and listen.strip() else None)


def _gc(section: Mapping[Any, Any]) -> GCSettings:
    """The C{gc:} keys; an C{interval} of 0 or null runs no collection in the server."""
    interval = _seconds_or("config key gc.interval", section.get("interval"), 0.0)
    return GCSettings(
        interval=interval or None,
        grace=_seconds_or("config key gc.grace", section.get("grace"), DEFAULT_GC_GRACE),
        untagged=_seconds_or("config key gc.untagged", section.get("untagged"),
                             DEFAULT_GC_UNTAGGED),
    )


def _seconds_or(label: str, value: Any, default: float = DEFAULT_UPSTREAM_TIMEOUT) -> float:
    """A number of seconds, or the default when unset."""
    return default if value is None else _seconds(label, value)


def _server(section: Mapping[Any, Any], given: Mapping[str, Any]) -> ServerSettings:
    """The C{server:} keys with the command line's values over them (§10.3)."""

    def pick(name: str) -> tuple[Any, str]:
        # The label names where a bad value came from, so the error message points at it.
        if f"server.{name}" in given:
            return given[f"server.{name}"], "option --" + name.replace("_", "-")
        return section.get(name), f"config key server.{name}"

    def number(name: str, default: int) -> int:
        value, label = pick(name)
        return default if value is None else _integer(label, value)

    def seconds(name: str, default: float) -> float:
        value, label = pick(name)
        return default if value is None else _seconds(label, value)

    def text(name: str) -> str | None:
        value, label = pick(name)
        return _text(label, value)

    port, port_label = pick("port")
    port = 5000 if port is None else _integer(port_label, port, maximum=65535)
    # --listen, else --port, else server.listen, else server.port: a --port given on the command
    # line must beat a server.listen from the file.
    listen_option = given.get("server.listen")
    if listen_option is not None and len(listen_option) > 0:
        listen = _listen("option --listen", listen_option)
    elif "server.port" in given:
        listen = ()
    else:
        listen = _listen("config key server.listen", section.get("listen"))
    workers, workers_label = pick("workers")
    wsgi = text("wsgi")
    mount, mount_label = pick("wsgi_mount")
    if mount is not None and wsgi is None:
        raise ConfigError(f"{mount_label} needs a WSGI application (--wsgi or server.wsgi)")
    threads, threads_label = pick("threads")
    proxies, proxies_label = pick("trusted_proxies")
    return ServerSettings(
        port=port,
        listen=listen,
        workers=None if workers is None else _integer(workers_label, workers),
        wsgi=wsgi,
        max_requests=number("max_requests", 0),
        max_requests_jitter=number("max_requests_jitter", 0),
        timeout=seconds("timeout", 30.0),
        graceful_timeout=seconds("graceful_timeout", 30.0),
        pidfile=text("pidfile"),
        access_log=text("access_log"),
        max_worker_memory=number("max_worker_memory", 0),
        wsgi_mount=_mount(mount_label, mount),
        threads=(DEFAULT_WSGI_THREADS if threads is None
                 else _integer(threads_label, threads, minimum=1)),
        trusted_proxies=_proxies(proxies_label, proxies),
    )


def _passwords(section: Mapping[Any, Any]) -> PasswordSettings | None:
    """
    C{auth:}: its one kind, C{htpasswd}, with the file read now, so that a start or a reload
    with a file that cannot be used stops with one line.
    """
    kinds = sorted(str(name) for name in section if name != "htpasswd")
    if kinds:
        raise ConfigError(f"config key auth.{kinds[0]} is not supported (supported: htpasswd)")
    if "htpasswd" not in section:
        return None
    htpasswd = _section(section, "htpasswd")
    path = _text("config key auth.htpasswd.path", htpasswd.get("path"))
    if not path:
        raise ConfigError("config key auth.htpasswd.path must name the htpasswd file")
    realm = _text("config key auth.htpasswd.realm", htpasswd.get("realm")) or DEFAULT_REALM
    if not _REALM.fullmatch(realm):
        raise ConfigError(f"config key auth.htpasswd.realm must be printable text without"
                          f" quotes or backslashes, not {realm!r}")
    readers = htpasswd.get("readers") or ()
    if isinstance(readers, str) or not isinstance(readers, (list, tuple)) or not all(
            isinstance(reader, str) for reader in readers):
        raise ConfigError(f"config key auth.htpasswd.readers must be a list of user names,"
                          f" not {readers!r}")
    try:
        users = read_htpasswd(path)
    except HtpasswdError as error:
        raise ConfigError(str(error)) from None
    for reader in sorted(set(readers) - set(users)):
        log.warn("auth.htpasswd.readers: user {user!r} is not in {path}", user=reader, path=path)
    return PasswordSettings(path=path, realm=realm, readers=frozenset(readers),
                            users=MappingProxyType(dict(users)))


def _section(raw: Mapping[Any, Any], name: str) -> Mapping[Any, Any]:
    """A nested mapping such as C{mirroring:} or C{server:}; null or empty reads as empty."""
    value = raw.get(name)
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {name} must be a mapping, not {_kind(value)}")
    return value


def _s3(raw: Mapping[Any, Any], storage_path: str) -> S3Settings:
    """The S3 keys (docs/storage.md); a missing bucket is refused at start, not here."""

    def text(name: str) -> str | None:
        return _text(f"config key {name}", raw.get(name))

    def seconds(name: str, default: float) -> float:
        return _seconds_or(f"config key {name}", raw.get(name), default)

    port = raw.get("boto_port")
    calling_format = text("boto_calling_format") or ""
    secure = raw.get("s3_secure")
    part_size = raw.get("s3_part_size")
    return S3Settings(
        bucket=text("s3_bucket") or text("boto_bucket"),
        region=text("s3_region") or "us-east-1",
        access_key=text("s3_access_key"),
        secret_key=text("s3_secret_key"),
        secure=True if secure is None else bool(secure),
        encrypt=bool(raw.get("s3_encrypt")),
        host=text("boto_host"),
        port=None if port in (None, "") else _integer(
            "config key boto_port", port, minimum=1, maximum=65535),
        path_style="OrdinaryCallingFormat" in calling_format,
        prefix=storage_path.lstrip("/"),
        part_size=DEFAULT_S3_PART_SIZE if part_size is None else _integer(
            "config key s3_part_size", part_size, *S3_PART_SIZES),
        timeout=seconds("s3_timeout", DEFAULT_S3_TIMEOUT),
        redirect_expires=seconds("storage_redirect_expires", DEFAULT_REDIRECT_EXPIRES),
        upload_max_age=seconds("s3_upload_max_age", DEFAULT_UPLOAD_MAX_AGE),
    )


def _redis(raw: Mapping[Any, Any], name: str) -> RedisSettings | None:
    """A Redis section (C{cache}, C{cache_lru}); C{None} when its C{host} is unset, as in 0.9.1."""
    section = _section(raw, name)
    host = _text(f"config key {name}.host", section.get("host"))
    if not host:
        return None
    port, db = section.get("port"), section.get("db")
    return RedisSettings(
        host=host,
        port=6379 if port in (None, "") else _integer(
            f"config key {name}.port", port, minimum=1, maximum=65535),
        db=0 if db in (None, "") else _integer(f"config key {name}.db", db),
        password=_text(f"config key {name}.password", section.get("password")),
        ttl=_seconds_or(f"config key {name}.ttl", section.get("ttl"), DEFAULT_CACHE_TTL),
    )


def _storage_name(value: Any) -> str:
    """The driver name: C{file} is 0.9.1's other name for C{local}; absent means local."""
    if value is None or value == "":
        return "local"
    name = str(value).strip().lower()
    return "local" if name == "file" else name


def _loglevel(value: Any) -> str:
    """A level name twisted.logger knows; anything else falls back to info."""
    if value is None:
        return "info"
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        return value.strip().lower()
    # Not "level=": Logger.emit takes that argument itself.
    log.warn("config key loglevel: unknown level {value!r}, using info", value=value)
    return "info"


def _search_backend(value: Any) -> str | None:
    """The search backend, or C{None} when search is off (§9)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() in SEARCH_BACKENDS:
        return value.strip().lower()
    log.warn(
        "config key search_backend: unsupported backend {backend!r}, search is disabled"
        " (supported: sqlalchemy, sqlite, postgresql)",
        backend=value,
    )
    return None


def _registry_endpoints(value: Any) -> str | None:
    """The X-Docker-Endpoints value: a string verbatim, a list joined with commas."""
    if isinstance(value, (list, tuple)):
        label = "config key registry_endpoints"
        return ",".join(_text(label, item) or "" for item in value) or None
    return _text("config key registry_endpoints", value)


def _text(label: str, value: Any, empty: str | None = None) -> str | None:
    """
    A string setting: null reads as C{None}, C{''} as C{empty}, numbers as their text.

    @raise ConfigError: the value is a boolean, a list or a mapping.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value if value else empty
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{label} must be a string, not {_kind(value)}")


def _integer(label: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """
    A whole number in range; text such as C{"8"} is accepted because options arrive as text.

    @raise ConfigError: anything else.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{label} must be a whole number {bounds}, not {value!r}")
    return number


def _seconds(label: str, value: Any) -> float:
    """
    A non-negative number of seconds (C{"2.5"} accepted as text).

    @raise ConfigError: anything else.
    """
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    # "not number >= 0" also rejects NaN.
    if number is None or not number >= 0 or number == float("inf"):
        raise ConfigError(f"{label} must be a number of seconds >= 0, not {value!r}")
    return number


def _platform(label: str, value: Any) -> tuple[str, ...]:
    """C{os/architecture} or C{os/architecture/variant}, as docker's C{--platform} takes it."""
    if value is None:
        return DEFAULT_BRIDGE_PLATFORM
    parts = tuple(value.split("/")) if isinstance(value, str) else ()
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_.-]+", p) for p in parts):
        raise ConfigError(f"{label} must be os/architecture[/variant], such as linux/arm64/v8;"
                          f" got {value!r}")
    return parts


def _listen(label: str, value: Any) -> tuple[str, ...]:
    """Endpoint strings from a string or a list of strings; null means none."""
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, str) and item.strip() for item in items
    ):
        raise ConfigError(f"{label} must be an endpoint string or a list of them, not {value!r}")
    return tuple(items)


def _mount(label: str, value: Any) -> str:
    """A path prefix such as C{/ui}, without its trailing slash; unset is C{/}, the root."""
    path = _text(label, value)
    if path is None:
        return "/"
    segments = path.rstrip("/").split("/")[1:]
    if not path.startswith("/") or any(s in ("", ".", "..") or "?" in s for s in segments):
        raise ConfigError(f"{label} must be a path such as /ui, not {value!r}")
    return "/" + "/".join(segments)


def _proxies(label: str, value: Any) -> tuple[str, ...]:
    """
    Trusted proxies from a comma-separated string or a list: IP addresses and networks
    (normalised, C{10.0.0.0/8}), C{unix} for UNIX-socket peers, C{*} for any peer.
    """
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{label} must be a list of addresses, not {_kind(value)}")
    proxies = []
    for item in items:
        entry = str(item).strip()
        if entry in ("unix", "*"):
            proxies.append(entry)
            continue
        try:
            proxies.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(f"{label}: {entry!r} is not an IP address or network") from None
    return tuple(proxies)


def _freeze(value: Any) -> Any:
    """A read-only copy: mappings become mapping proxies and lists tuples, at any depth."""
    if isinstance(value, Mapping):
        return MappingProxyType({name: _freeze(item) for name, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value
