"""Tests for twistreg.config: file lookup, flavors, _env: values, defaults, overrides (§10)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from twisted.logger import formatEvent, globalLogPublisher

from twistreg import config
from twistreg.config import (
    ConfigError,
    RedisSettings,
    S3Settings,
    ServerSettings,
    Settings,
    load_settings,
    require_supported_storage,
)

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "config_sample_0.9.1.yml"
SHIPPED = Path(__file__).parent.parent / "etc" / "config.yml"


@pytest.fixture
def log_events():
    """The formatted text of every event twistreg.config logs during the test."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "twistreg.config":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


def write(tmp_path: Path, text: str, name: str = "config.yml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(path: str | None = None, **kwargs: Any) -> Settings:
    """load_settings that never looks at /etc or the real environment."""
    kwargs.setdefault("environ", {})
    kwargs.setdefault("system_config_path", None)
    return load_settings(path, **kwargs)


# -- file lookup ---------------------------------------------------------------------------------


def test_builtin_defaults_when_no_file() -> None:
    settings = load(system_config_path=str(Path("/nonexistent/twistreg/config.yml")))
    assert settings.config_path is None
    assert settings.flavor == "dev"
    assert settings.storage == "local"
    assert settings.storage_path == "/tmp/registry"
    assert settings.standalone is True
    assert settings.debug is False
    assert settings.issue == '"docker-registry server"'
    assert settings.search_backend == "sqlite"
    assert settings.search_database is None
    assert settings.loglevel == "info"
    assert settings.index_endpoint == "https://index.docker.io"
    assert settings.token_cache_ttl == 60
    assert settings.server == ServerSettings()
    assert settings.server.endpoints() == ("tcp:5000",)


def test_absent_keys_differ_from_builtin(tmp_path: Path) -> None:
    """A file that lacks a key gets the "absent" value, not the built-in one."""
    settings = load(write(tmp_path, "dev: {}\n"))
    assert settings.standalone is False
    assert settings.search_backend is None
    assert settings.issue is None
    assert settings.debug is False
    assert settings.loglevel == "info"
    assert settings.index_endpoint == "https://index.docker.io"
    assert settings.disable_token_auth is False
    assert settings.storage_redirect is False
    assert settings.token_cache_ttl == 60
    assert settings.storage == "local"
    assert settings.storage_path == "/tmp/registry"
    assert settings.registry_endpoints is None
    assert settings.mirroring_source is None
    assert settings.s3 is None
    assert settings.cache is None and settings.cache_lru is None
    assert dict(settings.raw) == {}


def test_empty_flavor_reads_as_empty_mapping(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev:\n"))
    assert settings.standalone is False
    assert settings.storage_path == "/tmp/registry"


def test_s3_storage_path_absent_is_empty(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev: {storage: s3, s3_bucket: b}\n"))
    assert settings.storage == "s3"
    assert settings.storage_path == ""
    assert settings.s3 == S3Settings(bucket="b")


S3_KEYS = """\
dev:
    storage: s3
    storage_path: /registry
    boto_bucket: images
    s3_region: ~
    s3_secure: false
    boto_host: 127.0.0.1
    boto_port: "8333"
    boto_calling_format: boto.s3.connection.OrdinaryCallingFormat
    s3_use_sigv4: true
    s3_part_size: 6291456
    s3_timeout: 2.5
    storage_redirect_expires: 60
    s3_upload_max_age: 3600
    cache: {host: redis, port: 6380, db: 2, password: secret}
    cache_lru: {host: lru, ttl: 30}
"""


def test_s3_and_redis_keys(tmp_path: Path) -> None:
    settings = load(write(tmp_path, S3_KEYS))
    assert settings.s3 == S3Settings(
        bucket="images", secure=False, host="127.0.0.1", port=8333, path_style=True,
        prefix="registry", part_size=6 * 1024 * 1024, timeout=2.5, redirect_expires=60,
        upload_max_age=3600,
    )
    assert settings.cache == RedisSettings(host="redis", port=6380, db=2, password="secret")
    assert settings.cache_lru == RedisSettings(host="lru", ttl=30)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("s3_part_size: 1024", "config key s3_part_size must be a whole number from 5242880"),
        ("boto_port: x", "config key boto_port must be a whole number from 1 to 65535"),
        ("s3_timeout: -1", "config key s3_timeout must be a number of seconds"),
        ("cache_lru: {host: r, port: 0}", "config key cache_lru.port must be a whole number"),
    ],
)
def test_bad_s3_and_redis_keys(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        load(write(tmp_path, f"dev:\n    storage: s3\n    {line}\n"))


def test_system_config_used_when_it_exists(tmp_path: Path) -> None:
    path = write(tmp_path, "dev: {storage_path: /from/system}\n")
    settings = load(system_config_path=path)
    assert settings.config_path == path
    assert settings.storage_path == "/from/system"


def test_config_file_wins_over_environment(tmp_path: Path) -> None:
    named = write(tmp_path, "dev: {storage_path: /named}\n", "named.yml")
    env = write(tmp_path, "dev: {storage_path: /env}\n", "env.yml")
    system = write(tmp_path, "dev: {storage_path: /system}\n", "system.yml")
    environ = {"DOCKER_REGISTRY_CONFIG": env}
    assert load(named, environ=environ, system_config_path=system).storage_path == "/named"
    assert load(environ=environ, system_config_path=system).storage_path == "/env"


def test_docker_registry_config_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "dev: {storage_path: /relative}\n", "cfg.yml")
    monkeypatch.chdir(tmp_path)
    settings = load(environ={"DOCKER_REGISTRY_CONFIG": "cfg.yml"})
    assert settings.storage_path == "/relative"
    assert settings.config_path == str(tmp_path / "cfg.yml")


@pytest.mark.parametrize("via", ["option", "environment"])
def test_unreadable_named_file(tmp_path: Path, via: str) -> None:
    missing = str(tmp_path / "missing.yml")
    with pytest.raises(ConfigError) as caught:
        if via == "option":
            load(missing)
        else:
            load(environ={"DOCKER_REGISTRY_CONFIG": missing})
    message = str(caught.value)
    assert message.startswith(f"cannot read config file {missing}")
    assert "\n" not in message


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(str(tmp_path))


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "dev:\n    storage: [local\n    debug: true\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"config file {path} is not valid YAML: ")
    assert "line" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["- dev\n- prod\n", "", "just a string\n"])
def test_top_level_must_be_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"config file {path} must map flavor names to settings")


def test_flavor_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="flavor dev in config file .* must be a mapping"):
        load(write(tmp_path, "dev: [1, 2]\n"))


# -- flavors -------------------------------------------------------------------------------------


FLAVORED = """\
common: &common
    loglevel: warning
    mirroring:
        source: https://upstream.example
    server:
        port: 6000
base: &base
    <<: *common
    storage_path: /base
dev:
    <<: *base
    loglevel: debug
prod:
    <<: *base
    storage_path: /prod
"""


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(tmp_path, FLAVORED)
    dev = load(path)
    assert dev.flavor == "dev"
    assert dev.loglevel == "debug"
    assert dev.storage_path == "/base"
    assert dev.mirroring_source == "https://upstream.example"
    assert dev.server.port == 6000
    prod = load(path, flavor="prod")
    assert prod.flavor == "prod"
    assert prod.loglevel == "warning"
    assert prod.storage_path == "/prod"


def test_settings_flavor_variable_and_option(tmp_path: Path) -> None:
    path = write(tmp_path, FLAVORED)
    assert load(path, environ={"SETTINGS_FLAVOR": "prod"}).storage_path == "/prod"
    # The option wins over the variable.
    assert load(path, flavor="base", environ={"SETTINGS_FLAVOR": "prod"}).storage_path == "/base"


def test_missing_flavor(tmp_path: Path) -> None:
    path = write(tmp_path, FLAVORED)
    with pytest.raises(ConfigError) as caught:
        load(path, flavor="staging")
    assert str(caught.value) == (
        f"The specified flavor (staging) is missing in your config file ({path})"
    )


def test_missing_flavor_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, FLAVORED)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={"SETTINGS_FLAVOR": "qa"})
    assert str(caught.value) == f"The specified flavor (qa) is missing in your config file ({path})"


def test_builtin_defaults_ignore_flavor() -> None:
    """With no file there is nothing to be missing from: the flavor is only reported."""
    assert load(flavor="anything").flavor == "anything"


# -- _env: values --------------------------------------------------------------------------------


ENVIRONMENT = """\
dev:
    debug: _env:DEBUG:false
    standalone: _env:STANDALONE
    storage_path: _env:STORAGE_PATH:/tmp/registry
    sqlalchemy_index_database: _env:DB:sqlite:////tmp/docker-registry.db
    registry_endpoints: _env:ENDPOINTS
    token_cache_ttl: _env:TTL:30
    mirroring:
        source: _env:MIRROR_SOURCE
        nested:
            - _env:ITEM:a:b
            - plain
    server:
        port: _env:PORT:5000
        listen: _env:LISTEN
"""


def test_env_defaults(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ENVIRONMENT))
    assert settings.debug is False
    # A variable without a default that is not set reads as null.
    assert settings.raw["standalone"] is None
    assert settings.standalone is False
    assert settings.storage_path == "/tmp/registry"
    # Only the first two colons split: the default keeps its own.
    assert settings.search_database == "sqlite:////tmp/docker-registry.db"
    assert settings.token_cache_ttl == 30
    assert settings.mirroring_source is None
    assert settings.raw["mirroring"]["nested"] == ("a:b", "plain")
    assert settings.server.port == 5000
    assert settings.server.endpoints() == ("tcp:5000",)


def test_env_values_parsed_as_yaml(tmp_path: Path) -> None:
    environ = {
        "DEBUG": "true",
        "STANDALONE": "yes",
        "STORAGE_PATH": "/srv/registry",
        "DB": "postgresql://u:p@db:5432/reg",
        "ENDPOINTS": "[a.example:5000, b.example]",
        "TTL": "0",
        "MIRROR_SOURCE": "https://registry-1.docker.io",
        "ITEM": "42",
        "PORT": "8080",
        "LISTEN": "[tcp:1, 'unix:/run/x.sock']",
    }
    settings = load(write(tmp_path, ENVIRONMENT), environ=environ)
    assert settings.debug is True
    assert settings.raw["standalone"] is True
    assert settings.standalone is True
    assert settings.storage_path == "/srv/registry"
    assert settings.search_database == "postgresql://u:p@db:5432/reg"
    assert settings.raw["registry_endpoints"] == ("a.example:5000", "b.example")
    assert settings.registry_endpoints == "a.example:5000,b.example"
    assert settings.token_cache_ttl == 0
    assert settings.mirroring_source == "https://registry-1.docker.io"
    assert settings.raw["mirroring"]["nested"][0] == 42
    assert settings.server.port == 8080
    assert settings.server.endpoints() == ("tcp:1", "unix:/run/x.sock")


def test_env_empty_value_is_null(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ENVIRONMENT), environ={"DEBUG": "", "STORAGE_PATH": ""})
    assert settings.raw["debug"] is None
    assert settings.debug is False
    assert settings.storage_path == "/tmp/registry"


def test_env_invalid_yaml_is_plain_string(tmp_path: Path, log_events: list) -> None:
    secret = "%not[yaml"
    path = write(tmp_path, "dev:\n    bugsnag_like: _env:TOKEN\n    other: _env:X:[bad\n")
    settings = load(path, environ={"TOKEN": secret})
    assert settings.raw["bugsnag_like"] == secret
    assert settings.raw["other"] == "[bad"
    logged = texts(log_events)
    assert len(logged) == 2
    assert "bugsnag_like" in logged[0] and "$TOKEN" in logged[0]
    assert "other" in logged[1] and "default of $X" in logged[1]
    assert not any(secret in text for text in logged)


def test_env_reads_only_the_given_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "true")
    assert load(write(tmp_path, ENVIRONMENT), environ={}).debug is False


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWISTREG_TEST_PATH", "/from/os/environ")
    path = write(tmp_path, "dev: {storage_path: _env:TWISTREG_TEST_PATH}\n")
    settings = load_settings(path, system_config_path=None)
    assert settings.storage_path == "/from/os/environ"


def test_shared_anchor_expanded_per_load(tmp_path: Path) -> None:
    """Merged flavors share nested objects in PyYAML; expansion must not write into them."""
    path = write(tmp_path, FLAVORED.replace("https://upstream.example", "_env:SRC"))
    first = load(path, environ={"SRC": "https://one.example"})
    second = load(path, flavor="prod", environ={"SRC": "https://two.example"})
    assert first.mirroring_source == "https://one.example"
    assert second.mirroring_source == "https://two.example"


# -- individual keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("SQLAlchemy", "sqlalchemy"),
        ("sqlite", "sqlite"),
        ("PostgreSQL", "postgresql"),
        ("''", None),
        ("~", None),
    ],
)
def test_search_backend(tmp_path: Path, value: str, expected: str | None) -> None:
    settings = load(write(tmp_path, f"dev: {{search_backend: {value}}}\n"))
    assert settings.search_backend == expected


def test_unknown_search_backend_warns(tmp_path: Path, log_events: list) -> None:
    settings = load(write(tmp_path, "dev: {search_backend: elasticsearch}\n"))
    assert settings.search_backend is None
    assert len(log_events) == 1
    assert "elasticsearch" in texts(log_events)[0]


def test_search_database_fallback_name(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev: {search_database: 'sqlite:///x.db'}\n"))
    assert settings.search_database == "sqlite:///x.db"


@pytest.mark.parametrize(
    "value, expected", [("DEBUG", "debug"), ("critical", "critical"), ("verbose", "info")]
)
def test_loglevel(tmp_path: Path, value: str, expected: str, log_events: list) -> None:
    assert load(write(tmp_path, f"dev: {{loglevel: {value}}}\n")).loglevel == expected
    assert len(log_events) == (value == "verbose")


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("on", True), ("yes", True), ("1", True), ("0", False), ("''", False)],
)
def test_boolean_truth(tmp_path: Path, value: str, expected: bool) -> None:
    settings = load(write(tmp_path, f"dev: {{debug: {value}, storage_redirect: {value}}}\n"))
    assert settings.debug is expected
    assert settings.storage_redirect is expected


def test_index_endpoint_trailing_slash(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev: {index_endpoint: 'https://index.example/'}\n"))
    assert settings.index_endpoint == "https://index.example"


def test_registry_endpoints_string_verbatim(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev: {registry_endpoints: 'a:1, b:2'}\n"))
    assert settings.registry_endpoints == "a:1, b:2"


@pytest.mark.parametrize("name, expected", [("file", "local"), ("S3", "s3"), ("local", "local")])
def test_supported_storage(tmp_path: Path, name: str, expected: str) -> None:
    settings = load(write(tmp_path, f"dev: {{storage: {name}, storage_path: /data}}\n"))
    assert settings.storage == expected
    require_supported_storage(settings)


@pytest.mark.parametrize("name", ["azureblob", "GCS", "swift", "glance", "elliptics", "dumb"])
def test_unsupported_storage_loads_but_cannot_start(tmp_path: Path, name: str) -> None:
    settings = load(write(tmp_path, f"dev: {{storage: {name}}}\n"))
    assert settings.storage == name.lower()
    with pytest.raises(ConfigError) as caught:
        require_supported_storage(settings)
    assert str(caught.value) == (
        f"storage driver '{name.lower()}' is not supported (supported: local, file, s3)"
    )


def test_storage_path_override_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "dev: {storage_path: /file}\n")
    assert load(path, overrides={"storage_path": "/cli"}).storage_path == "/cli"
    assert load(path, overrides={"storage_path": None}).storage_path == "/file"
    assert load(overrides={"storage_path": "/cli"}).storage_path == "/cli"


def test_settings_are_read_only(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "dev: {mirroring: {source: x}, s3_bucket: b}\n"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.debug = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.raw["mirroring"]["source"] = "y"  # type: ignore[index]


# -- ignored keys --------------------------------------------------------------------------------


IGNORED = """\
dev:
    privileged_key: /etc/key.pem
    mirroring:
        source: https://upstream.example
        tags_cache_ttl: 100
    cache: {host: redis, password: CACHEPASSWORD}
    cache_lru: {host: redis}
    email_exceptions: {smtp_host: mail, smtp_password: SMTPPASSWORD}
    bugsnag: BUGSNAGKEY
    cors: {origins: ['*']}
    boto_debug: 1
    boto_proxy: proxy
    boto_proxy_port: 3128
    boto_proxy_user: user
    boto_proxy_pass: PROXYPASSWORD
    cloudfront: {base: 'https://cf', keyid: k, keysecret: CFSECRET}
    some_unknown_key: 1
"""


def test_one_warning_per_ignored_key(tmp_path: Path, log_events: list) -> None:
    load(write(tmp_path, IGNORED))
    keys = [event["key"] for event in log_events]
    assert keys == [
        "privileged_key",
        "mirroring.tags_cache_ttl",
        "email_exceptions.smtp_host",
        "bugsnag",
        "cors.origins",
        "boto_debug",
        "boto_proxy",
        "boto_proxy_port",
        "boto_proxy_user",
        "boto_proxy_pass",
        "cloudfront",
    ]
    assert all(event["log_level"].name == "warn" for event in log_events)
    logged = " ".join(texts(log_events))
    assert "config key bugsnag is not supported and is ignored" in logged
    for secret in ("CACHEPASSWORD", "SMTPPASSWORD", "BUGSNAGKEY", "PROXYPASSWORD", "CFSECRET"):
        assert secret not in logged


def test_tags_cache_ttl_only_reported_with_mirroring(tmp_path: Path, log_events: list) -> None:
    load(write(tmp_path, "dev: {mirroring: {tags_cache_ttl: 172800}}\n"))
    assert log_events == []


def test_unset_ignored_keys_are_silent(tmp_path: Path, log_events: list) -> None:
    text = "dev: {privileged_key: null, cache: {host: null, db: 0}, boto_debug: 0, cors: {}}\n"
    load(write(tmp_path, text))
    assert log_events == []


# -- server keys and overrides -------------------------------------------------------------------


SERVER = """\
dev:
    server:
        port: 6000
        listen: tcp:7000:interface=127.0.0.1
        workers: 3
        wsgi: app:application
        max_requests: 1000
        max_requests_jitter: 50
        timeout: 12.5
        graceful_timeout: 5
        pidfile: /run/t.pid
        access_log: '-'
"""


def test_server_keys(tmp_path: Path) -> None:
    server = load(write(tmp_path, SERVER)).server
    assert server == ServerSettings(
        port=6000,
        listen=("tcp:7000:interface=127.0.0.1",),
        workers=3,
        wsgi="app:application",
        max_requests=1000,
        max_requests_jitter=50,
        timeout=12.5,
        graceful_timeout=5.0,
        pidfile="/run/t.pid",
        access_log="-",
    )
    assert server.endpoints() == ("tcp:7000:interface=127.0.0.1",)


def test_server_port_without_listen(tmp_path: Path) -> None:
    server = load(write(tmp_path, "dev: {server: {port: 6000}}\n")).server
    assert server.endpoints() == ("tcp:6000",)


def test_listen_list(tmp_path: Path) -> None:
    server = load(write(tmp_path, "dev: {server: {listen: ['tcp:1', 'tcp:2']}}\n")).server
    assert server.endpoints() == ("tcp:1", "tcp:2")


def test_port_option_beats_listen_key(tmp_path: Path) -> None:
    server = load(write(tmp_path, SERVER), overrides={"server.port": 9000}).server
    assert server.port == 9000
    assert server.endpoints() == ("tcp:9000",)


def test_listen_option_beats_everything(tmp_path: Path) -> None:
    overrides = {"server.port": 9000, "server.listen": ("unix:/tmp/s", "tcp:9001")}
    server = load(write(tmp_path, SERVER), overrides=overrides).server
    assert server.endpoints() == ("unix:/tmp/s", "tcp:9001")


def test_unset_options_do_not_override(tmp_path: Path) -> None:
    overrides = {"server.port": None, "server.listen": (), "server.workers": None}
    server = load(write(tmp_path, SERVER), overrides=overrides).server
    assert server.endpoints() == ("tcp:7000:interface=127.0.0.1",)
    assert server.workers == 3


def test_options_override_keys(tmp_path: Path) -> None:
    overrides = {
        "server.workers": 0,
        "server.access_log": "/var/log/a.log",
        "server.max_requests": "20",
        "server.timeout": "2.5",
    }
    server = load(write(tmp_path, SERVER), overrides=overrides).server
    assert server.workers == 0
    assert server.access_log == "/var/log/a.log"
    assert server.max_requests == 20
    assert server.timeout == 2.5
    assert server.max_requests_jitter == 50


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="server.prot"):
        load(overrides={"server.prot": 1})


@pytest.mark.parametrize(
    "text, message",
    [
        ("server: {port: abc}", "config key server.port must be a whole number from 0 to 65535"),
        ("server: {port: 70000}", "config key server.port must be a whole number"),
        ("server: {port: true}", "config key server.port must be a whole number"),
        ("server: {workers: -1}", "config key server.workers must be a whole number >= 0"),
        ("server: {max_requests: 1.5}", "config key server.max_requests must be a whole number"),
        ("server: {timeout: soon}", "config key server.timeout must be a number of seconds"),
        ("server: {graceful_timeout: -1}", "config key server.graceful_timeout must be"),
        ("server: {listen: [tcp:1, 5]}", "config key server.listen must be an endpoint string"),
        ("server: {listen: {a: b}}", "config key server.listen must be an endpoint string"),
        ("server: {pidfile: [a]}", "config key server.pidfile must be a string, not a list"),
        ("server: 5000", "config key server must be a mapping"),
        ("mirroring: [x]", "config key mirroring must be a mapping"),
        ("token_cache_ttl: forever", "config key token_cache_ttl must be a number of seconds"),
        ("storage_path: {a: b}", "config key storage_path must be a string"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, f"dev:\n    {text}\n"))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_wrong_option_names_the_option() -> None:
    with pytest.raises(ConfigError) as caught:
        load(overrides={"server.port": "abc"})
    assert str(caught.value) == "option --port must be a whole number from 0 to 65535, not 'abc'"
    with pytest.raises(ConfigError, match="option --max-requests-jitter"):
        load(overrides={"server.max_requests_jitter": -3})


# -- the stock 0.9.1 file and the shipped file ---------------------------------------------------


SAMPLE_FLAVORS = sorted(yaml.safe_load(SAMPLE.read_text()))


def test_sample_has_every_flavor() -> None:
    assert SAMPLE_FLAVORS == sorted(
        [
            "common", "local", "s3", "cloudfronts3", "azureblob", "ceph-s3", "gcs", "swift",
            "glance", "openstack", "glance-swift", "openstack-swift", "elliptics", "oss", "dev",
            "test", "prod",
        ]
    )  # fmt: skip


@pytest.mark.parametrize("flavor", SAMPLE_FLAVORS)
def test_sample_loads_every_flavor(flavor: str, log_events: list) -> None:
    settings = load(str(SAMPLE), flavor=flavor)
    assert settings.flavor == flavor
    assert settings.issue == '"docker-registry server"'
    assert settings.standalone is True
    assert settings.search_database == "sqlite:////tmp/docker-registry.db"
    # The stock file sets nothing twistreg ignores unless the environment does.
    assert log_events == []


@pytest.mark.parametrize(
    "flavor, storage, storage_path",
    [
        ("common", "local", "/tmp/registry"),
        ("local", "local", "/tmp/registry"),
        ("dev", "local", "/tmp/registry"),
        ("test", "local", "./tmp/test"),
        ("s3", "s3", "/registry"),
        ("ceph-s3", "s3", "/registry"),
        ("cloudfronts3", "s3", "/registry"),
        ("prod", "s3", "/prod"),
        ("gcs", "gcs", "/registry"),
        ("swift", "swift", "/registry"),
        ("glance", "glance", "/tmp/registry"),
        ("openstack", "glance", "/tmp/registry"),
        ("glance-swift", "glance", "/registry"),
        ("openstack-swift", "glance", "/registry"),
        # No storage_path: the local default applies to local storage only.
        ("azureblob", "azureblob", ""),
        ("elliptics", "elliptics", ""),
        ("oss", "oss", "/registry/"),
    ],
)
def test_sample_storage(flavor: str, storage: str, storage_path: str) -> None:
    settings = load(str(SAMPLE), flavor=flavor)
    assert settings.storage == storage
    assert settings.storage_path == storage_path
    if storage in ("local", "s3"):
        require_supported_storage(settings)
    else:
        with pytest.raises(ConfigError, match=f"storage driver '{storage}' is not supported"):
            require_supported_storage(settings)


def test_sample_dev_and_test() -> None:
    dev = load(str(SAMPLE))
    assert dev.flavor == "dev"
    assert dev.debug is True
    assert dev.loglevel == "debug"
    assert dev.search_backend == "sqlalchemy"
    test = load(str(SAMPLE), flavor="test")
    assert test.index_endpoint == "https://registry-stage.hub.docker.com"
    common = load(str(SAMPLE), flavor="common")
    assert common.debug is False
    assert common.search_backend is None
    assert common.mirroring_source is None


def test_sample_s3_keys() -> None:
    environ = {"AWS_BUCKET": "images", "AWS_KEY": "AKIA", "AWS_SECRET": "s3cr/t+"}
    prod = load(str(SAMPLE), flavor="prod", environ=environ)
    assert prod.s3 == S3Settings(
        bucket="images", access_key="AKIA", secret_key="s3cr/t+", encrypt=True, secure=True,
        region="us-east-1", prefix="prod",
    )
    ceph = load(str(SAMPLE), flavor="ceph-s3")
    assert ceph.s3 is not None and ceph.s3.encrypt is False


def test_sample_reports_ignored_keys_set_by_environment(log_events: list) -> None:
    environ = {
        "MIRROR_SOURCE": "https://registry-1.docker.io",
        "CACHE_REDIS_HOST": "redis",
        "BUGSNAG": "KEY",
        "CF_BASE_URL": "https://cf.example",
    }
    settings = load(str(SAMPLE), flavor="cloudfronts3", environ=environ)
    assert settings.mirroring_source == "https://registry-1.docker.io"
    assert [event["key"] for event in log_events] == [
        "mirroring.tags_cache_ttl",
        "bugsnag",
        "cloudfront",
    ]


SHIPPED_FLAVORS = sorted(yaml.safe_load(SHIPPED.read_text()))


def test_shipped_flavors() -> None:
    assert SHIPPED_FLAVORS == ["common", "dev", "local", "prod", "s3"]


@pytest.mark.parametrize("flavor", SHIPPED_FLAVORS)
def test_shipped_config_loads_without_debug(flavor: str, log_events: list) -> None:
    settings = load(str(SHIPPED), flavor=flavor)
    assert settings.debug is False
    assert settings.raw["debug"] is False
    assert settings.standalone is True
    assert settings.loglevel == "info"
    assert settings.search_backend == "sqlite"
    assert settings.search_database is None
    assert settings.storage == ("s3" if flavor == "s3" else "local")
    assert settings.server.endpoints() == ("tcp:5000",)
    require_supported_storage(settings)
    assert log_events == []


def test_shipped_config_sets_debug_from_env_in_every_flavor() -> None:
    document = yaml.safe_load(SHIPPED.read_text())
    for flavor in SHIPPED_FLAVORS:
        assert document[flavor]["debug"] == "_env:DEBUG:false"


def test_shipped_storage_paths() -> None:
    assert load(str(SHIPPED), flavor="prod").storage_path == "/var/lib/twistreg"
    assert load(str(SHIPPED), flavor="dev").storage_path == "/tmp/registry"
    environ = {"STORAGE_PATH": "/srv/images", "DEBUG": "true"}
    prod = load(str(SHIPPED), flavor="prod", environ=environ)
    assert prod.storage_path == "/srv/images"
    assert prod.debug is True


def test_shipped_s3_flavor() -> None:
    environ = {"AWS_BUCKET": "images", "AWS_KEY": "k", "AWS_SECRET": "s", "AWS_HOST": "minio",
               "AWS_PORT": "9000", "AWS_SECURE": "false",
               "AWS_CALLING_FORMAT": "OrdinaryCallingFormat"}
    assert load(str(SHIPPED), flavor="s3", environ=environ).s3 == S3Settings(
        bucket="images", access_key="k", secret_key="s", secure=False, encrypt=True,
        host="minio", port=9000, path_style=True, prefix="registry")


def test_system_config_path_constant() -> None:
    assert config.SYSTEM_CONFIG_PATH == "/etc/twistreg/config.yml"


# -- applications named in the configuration -----------------------------------------------------


def test_load_application_follows_attribute_paths() -> None:
    import os.path

    assert config.load_application("os:path.join") is os.path.join
    assert config.load_application("os.path", default="join") is os.path.join


@pytest.mark.parametrize(("name", "message"), [
    ("os.path", "cannot load the worker application 'os.path': "
     "ValueError: no attribute named: use module:attribute"),
    ("os:sep", "the worker application 'os:sep' is not callable"),
    ("os:nothing_here", "cannot load the worker application 'os:nothing_here': "
     "AttributeError: module 'os' has no attribute 'nothing_here'"),
])
def test_load_application_errors_name_what_was_loaded(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load_application(name, "worker application")
    assert str(caught.value) == message


def test_bridge_platform(tmp_path: Path) -> None:
    """V1 clients get linux/amd64 of a V2 index unless the flavor names another platform."""
    assert load(write(tmp_path, "dev: {}\n")).bridge_platform == ("linux", "amd64")
    given = write(tmp_path, "dev:\n  bridge_platform: linux/arm64/v8\n")
    assert load(given).bridge_platform == ("linux", "arm64", "v8")
    for bad in ("linux", "linux/amd64/v8/x", "Linux/AMD64", 5):
        with pytest.raises(ConfigError, match="bridge_platform must be os/architecture"):
            load(write(tmp_path, f"dev:\n  bridge_platform: {bad}\n"))


def test_gc_keys(tmp_path: Path) -> None:
    """No collection in the server unless gc.interval is set; an hour's grace, a week untagged."""
    assert load(write(tmp_path, "dev: {}\n")).gc == config.GCSettings(None, 3600.0, 604800.0)
    given = write(tmp_path, "dev:\n  gc: {interval: 600, grace: '120', untagged: 86400}\n")
    assert load(given).gc == config.GCSettings(600.0, 120.0, 86400.0)
    assert load(write(tmp_path, "dev:\n  gc: {interval: 0}\n")).gc.interval is None
    with pytest.raises(ConfigError, match="config key gc.grace must be a number of seconds"):
        load(write(tmp_path, "dev:\n  gc: {grace: -1}\n"))
    with pytest.raises(ConfigError, match="config key gc must be a mapping"):
        load(write(tmp_path, "dev:\n  gc: 5\n"))
