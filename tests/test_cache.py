"""
The Redis caches (docs/storage.md, "Redis caches"): C{cache_lru} in front of storage and the
C{cache} that shares the index's answers, against a real Redis (tests/services.py) driven
from the test thread into the reactor's (the C{in_reactor} fixture); the key rules without.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import attrs
import pytest
import yaml
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.logger import LogLevel
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface.verify import verifyObject

from tests import services
from tests.routes import image_json, put_json
from tests.server import Server
from tests.stub_index import StubIndex
from twistreg import layout
from twistreg.config import BUILTIN_FLAVOR, RedisSettings, S3Settings, load_settings
from twistreg.layout import is_small_key, may_hold_small_keys, parse_repository
from twistreg.rediscache import DEFAULT_TIMEOUT, RedisClient, namespace
from twistreg.registry.auth import Access, Authorizer, IndexClient
from twistreg.storage.cache import CachedStorage
from twistreg.storage.interface import IMaintainable, IStaleUploads, IStorage, KeyNotFound
from twistreg.storage.local import LocalStorage

IMAGE = "a" * 64
REPOSITORY = parse_repository("foo/bar")
TAG = layout.tag_key(REPOSITORY, "latest")
TTL = 60.0
TOKEN = 'Token signature=ok,repository="foo/bar",access=read'


# -- which keys, under which names (no Redis) ------------------------------------------------------


@pytest.mark.parametrize("key", [
    layout.image_json_key(IMAGE), layout.image_ancestry_key(IMAGE),
    layout.image_checksum_key(IMAGE), TAG, layout.tag_key(REPOSITORY, "_x"),
    layout.repository_json_key(REPOSITORY), layout.index_images_key(REPOSITORY),
    layout.private_flag_key(REPOSITORY), layout.image_inprogress_key(IMAGE),
])
def test_small_keys(key: str) -> None:
    assert is_small_key(key)


@pytest.mark.parametrize("key", [
    layout.image_layer_key(IMAGE), layout.image_files_key(IMAGE), layout.image_diff_key(IMAGE),
    layout.images_list_key(REPOSITORY.key),
    layout.tag_json_key(REPOSITORY, "latest"), "images/json", "repositories/foo/json",
    f"repositories/foo/bar/x/{TAG.rsplit('/', 1)[1]}", "images/a/b/json", "json", "",
])
def test_other_keys_are_not_small(key: str) -> None:
    assert not is_small_key(key)


def test_directories_that_may_hold_small_keys() -> None:
    held = [layout.IMAGES, f"{layout.IMAGES}/{IMAGE}", layout.REPOSITORIES, "repositories/foo",
            REPOSITORY.directory]
    assert all(may_hold_small_keys(directory) for directory in held)
    assert not any(may_hold_small_keys(directory) for directory in [
        layout.image_layer_key(IMAGE), f"{REPOSITORY.directory}/x", "other", "uploads/a"])


def test_namespace_names_the_storage(tmp_path) -> None:
    settings = load_settings(None, None, {"storage_path": str(tmp_path / "s")}, environ={},
                             system_config_path=None)
    assert namespace(settings) == f"twistreg:local:{socket.gethostname()}:{tmp_path}/s:"
    s3 = attrs.evolve(settings, storage="s3", s3=S3Settings(bucket="b", prefix="r/p"))
    assert namespace(s3) == "twistreg:s3:b/r/p:"


def test_wrapper_provides_and_delegates_what_the_driver_does(tmp_path) -> None:
    backend = LocalStorage(str(tmp_path))
    # Only the interfaces are looked at: no Redis call is made.
    cached = CachedStorage(backend, None, "twistreg:test:", TTL)  # type: ignore[arg-type]
    for interface in (IStorage, IMaintainable, IStaleUploads):
        assert verifyObject(interface, cached)
    assert cached.name == "local"
    assert cached.check_writable.__self__ is backend
    backend.put_content("images/a/json", b"{}")
    os.utime(tmp_path / "images/a/json", (1000000000, 1000000000))
    assert cached.modified("images/a/json").result == 1000000000
    with pytest.raises(AttributeError):
        cached.root  # noqa: B018 (not an interface's: not handed on)


# -- cache_lru against a real Redis ------------------------------------------------------------

@attrs.define
class Node:
    """One registry process: its local storage (shared by the nodes of a test) and client."""

    storage: CachedStorage
    client: RedisClient
    root: str

    def path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def write_behind(self, key: str, data: bytes) -> None:
        """Change storage without the cache knowing (another registry's write, a restore)."""
        os.makedirs(os.path.dirname(self.path(key)), exist_ok=True)
        with open(self.path(key), "wb") as f:
            f.write(data)


@pytest.fixture
def redis(redis_server):
    """The session's Redis, empty for this test."""
    redis_server.flush()
    return redis_server


@pytest.fixture
def make_node(redis, tmp_path, in_reactor):
    """Nodes over one storage directory and one Redis, closed after the test."""
    made: list[Node] = []
    root = str(tmp_path / "storage")
    settings = RedisSettings(redis.host, redis.port, password=redis.password, ttl=TTL)

    def make() -> Node:
        client = in_reactor(RedisClient, settings, reactor, purpose="cache_lru")
        storage = CachedStorage(LocalStorage(root), client, "twistreg:test:", TTL)
        made.append(Node(storage, client, root))
        return made[-1]

    yield make
    for node in made:
        in_reactor(node.client.close)


def entry(redis, key: str):
    return redis.command("GET", f"twistreg:test:{key}")


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.integration
def test_read_through_and_write_through(make_node, redis, in_reactor) -> None:
    node = make_node()
    json_key = layout.image_json_key(IMAGE)
    node.write_behind(json_key, b'{"id": 1}')
    assert in_reactor(node.storage.get_content, json_key) == b'{"id": 1}'
    assert entry(redis, json_key) == b'+{"id": 1}'
    # Read from Redis now: storage changed behind the cache's back is not seen.
    node.write_behind(json_key, b'{"id": 2}')
    assert in_reactor(node.storage.get_content, json_key) == b'{"id": 1}'
    assert in_reactor(node.storage.exists, json_key) is True

    in_reactor(node.storage.put_content, TAG, IMAGE.encode())
    with open(node.path(TAG), "rb") as f:
        assert f.read() == IMAGE.encode()
    assert entry(redis, TAG) == b"+" + IMAGE.encode()


@pytest.mark.integration
def test_missing_keys_are_cached_and_a_write_replaces_them(make_node, redis, in_reactor):
    node = make_node()
    private = layout.private_flag_key(REPOSITORY)
    assert in_reactor(node.storage.exists, private) is False
    assert entry(redis, private) == b"-"
    with pytest.raises(KeyNotFound):
        in_reactor(node.storage.get_content, private)
    in_reactor(node.storage.put_content, private, b"")
    assert entry(redis, private) == b"+"
    assert in_reactor(node.storage.exists, private) is True


@pytest.mark.integration
def test_a_write_on_one_node_is_read_at_once_on_another(make_node, in_reactor) -> None:
    a, b = make_node(), make_node()
    private = layout.private_flag_key(REPOSITORY)
    in_reactor(a.storage.put_content, TAG, b"1" * 64)
    assert in_reactor(b.storage.get_content, TAG) == b"1" * 64
    assert in_reactor(b.storage.exists, private) is False
    in_reactor(a.storage.put_content, TAG, b"2" * 64)
    in_reactor(a.storage.put_content, private, b"")
    assert in_reactor(b.storage.get_content, TAG) == b"2" * 64
    assert in_reactor(b.storage.exists, private) is True
    in_reactor(a.storage.remove, TAG)
    assert in_reactor(b.storage.exists, TAG) is False


class HeldStorage(LocalStorage):
    """Reads storage when asked, but answers when the test opens the read's gate."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.gates: list[defer.Deferred[None]] = []

    def get_content(self, key: str) -> defer.Deferred[bytes]:
        read = super().get_content(key)
        gate: defer.Deferred[None] = defer.Deferred()
        self.gates.append(gate)
        return gate.addCallback(lambda _: read)


@pytest.mark.integration
@pytest.mark.parametrize("write", ["put", "remove"])
def test_a_slow_reader_cannot_put_back_what_a_writer_replaced(make_node, redis, in_reactor,
                                                              write):
    writer = make_node()
    reader = make_node()
    held = HeldStorage(reader.root)
    reader.storage = CachedStorage(held, reader.client, "twistreg:test:", TTL)
    writer.write_behind(TAG, b"old")
    reading = in_reactor(lambda: [reader.storage.get_content(TAG)])[0]
    wait_for(lambda: bool(held.gates))  # the reader has read "old" from storage
    if write == "put":
        in_reactor(writer.storage.put_content, TAG, b"new")
    else:
        in_reactor(writer.storage.remove, TAG)
    in_reactor(held.gates[0].callback, None)
    assert in_reactor(lambda: reading) == b"old"  # what storage held when it was asked
    assert entry(redis, TAG) == (b"+new" if write == "put" else b"-")


class FailingStorage(LocalStorage):
    """Writes, then says it failed: the caller cannot know whether a write landed."""

    def put_content(self, key: str, data: bytes) -> defer.Deferred[None]:
        super().put_content(key, data)
        return defer.fail(OSError("connection lost"))


@pytest.mark.integration
def test_a_failed_write_deletes_the_entry(make_node, redis, in_reactor) -> None:
    node = make_node()
    in_reactor(node.storage.put_content, TAG, b"old")
    failing = CachedStorage(FailingStorage(node.root), node.client, "twistreg:test:", TTL)
    with pytest.raises(OSError):
        in_reactor(failing.put_content, TAG, b"new")
    assert entry(redis, TAG) is None
    assert in_reactor(node.storage.get_content, TAG) == b"new"


@pytest.mark.integration
def test_remove_and_remove_tree_leave_missing_entries(make_node, redis, in_reactor) -> None:
    node = make_node()
    keys = [TAG, layout.repository_json_key(REPOSITORY), layout.private_flag_key(REPOSITORY),
            layout.index_images_key(REPOSITORY)]
    for key in keys:
        in_reactor(node.storage.put_content, key, b"x")
        assert in_reactor(node.storage.get_content, key) == b"x"
    in_reactor(node.storage.remove, TAG)
    assert entry(redis, TAG) == b"-"
    # A reader that read storage before the removal can no longer put the value back.
    node.write_behind(TAG, b"old")
    with pytest.raises(KeyNotFound):
        in_reactor(node.storage.get_content, TAG)

    in_reactor(node.storage.remove_tree, REPOSITORY.directory)
    assert not os.path.exists(node.path(REPOSITORY.directory))
    assert [entry(redis, key) for key in keys] == [b"-"] * len(keys)
    assert not any(in_reactor(node.storage.exists, key) for key in keys)

    # From higher up, the walk finds the small keys a level further down.
    in_reactor(node.storage.put_content, TAG, b"y")
    in_reactor(node.storage.remove_tree, "repositories/foo")
    assert entry(redis, TAG) == b"-"


@pytest.mark.integration
def test_layers_and_large_keys_never_reach_redis(make_node, redis, in_reactor) -> None:
    """Only a layer's size does, written by the layer's commit."""
    node = make_node()
    layer = layout.image_layer_key(IMAGE)
    writer = in_reactor(node.storage.open_writer, layer)
    in_reactor(writer.write, b"layer bytes")
    in_reactor(writer.commit)
    for key in (layout.image_files_key(IMAGE), layout.image_diff_key(IMAGE),
                layout.images_list_key(REPOSITORY.key)):
        in_reactor(node.storage.put_content, key, b"[]")
        assert in_reactor(node.storage.get_content, key) == b"[]"
    assert in_reactor(node.storage.get_content, layer) == b"layer bytes"
    assert in_reactor(node.storage.exists, layer) is True
    assert in_reactor(node.storage.size, layer) == 11
    assert redis.command("KEYS", "*") == [f"twistreg:test:{layer}#size".encode()]
    assert entry(redis, layer + "#size") == b"+11"


@pytest.mark.integration
def test_a_layer_size_is_seen_by_every_node_once_committed(make_node, in_reactor) -> None:
    a, b = make_node(), make_node()
    layer = layout.image_layer_key(IMAGE)
    with pytest.raises(KeyNotFound):
        in_reactor(b.storage.size, layer)
    writer = in_reactor(a.storage.open_writer, layer)
    in_reactor(writer.write, b"first")
    in_reactor(writer.commit)
    assert in_reactor(b.storage.size, layer) == 5
    writer = in_reactor(a.storage.open_writer, layer)
    in_reactor(writer.write, b"second layer")
    in_reactor(writer.abort)
    assert in_reactor(b.storage.size, layer) == 5
    writer = in_reactor(a.storage.open_writer, layer)
    in_reactor(writer.write, b"second layer")
    in_reactor(writer.commit)
    assert in_reactor(b.storage.size, layer) == 12
    in_reactor(a.storage.remove, layer)
    with pytest.raises(KeyNotFound):
        in_reactor(b.storage.size, layer)


@pytest.mark.integration
def test_a_move_is_a_write_of_both_keys(make_node, redis, in_reactor) -> None:
    """Another node reads the source missing and the destination's new value at once."""
    a, b = make_node(), make_node()
    source, destination = layout.tag_key(REPOSITORY, "new"), TAG
    a.write_behind(source, b"2" * 64)
    in_reactor(a.storage.put_content, destination, b"1" * 64)
    assert in_reactor(b.storage.get_content, source) == b"2" * 64
    in_reactor(a.storage.move, source, destination)
    assert (entry(redis, source), entry(redis, destination)) == (b"-", b"+" + b"2" * 64)
    assert in_reactor(b.storage.exists, source) is False
    assert in_reactor(b.storage.get_content, destination) == b"2" * 64

    layer, other = layout.image_layer_key(IMAGE), layout.image_layer_key("b" * 64)
    a.write_behind(other, b"other layer")
    with pytest.raises(KeyNotFound):
        in_reactor(b.storage.size, layer)
    in_reactor(a.storage.move, other, layer)
    assert in_reactor(b.storage.size, layer) == 11
    with pytest.raises(KeyNotFound):
        in_reactor(b.storage.size, other)


@pytest.mark.integration
def test_a_move_of_other_keys_never_reaches_redis(make_node, redis, in_reactor) -> None:
    node = make_node()
    node.write_behind("twistreg/v2/uploads/u/0", b"blob")
    in_reactor(node.storage.move, "twistreg/v2/uploads/u/0", "docker/registry/v2/blobs/data")
    assert in_reactor(node.storage.get_content, "docker/registry/v2/blobs/data") == b"blob"
    assert redis.command("KEYS", "*") == []


@pytest.mark.integration
def test_a_move_of_a_missing_source(make_node, redis, in_reactor) -> None:
    """Nothing moves, and the entries stay what they were."""
    node = make_node()
    in_reactor(node.storage.put_content, TAG, b"kept")
    source = layout.tag_key(REPOSITORY, "gone")
    with pytest.raises(KeyNotFound):
        in_reactor(node.storage.move, source, TAG)
    assert entry(redis, TAG) == b"+kept"
    assert in_reactor(node.storage.get_content, TAG) == b"kept"


class FailingMove(LocalStorage):
    """Moves, then says it failed."""

    def move(self, source: str, destination: str) -> defer.Deferred[None]:
        super().move(source, destination)
        return defer.fail(OSError("connection lost"))


@pytest.mark.integration
def test_a_failed_move_deletes_both_entries(make_node, redis, in_reactor) -> None:
    node = make_node()
    source = layout.tag_key(REPOSITORY, "new")
    in_reactor(node.storage.put_content, source, b"new")
    in_reactor(node.storage.put_content, TAG, b"old")
    failing = CachedStorage(FailingMove(node.root), node.client, "twistreg:test:", TTL)
    with pytest.raises(OSError):
        in_reactor(failing.move, source, TAG)
    assert (entry(redis, source), entry(redis, TAG)) == (None, None)
    assert in_reactor(node.storage.get_content, TAG) == b"new"


@pytest.mark.integration
def test_every_entry_has_the_ttl(make_node, redis, in_reactor) -> None:
    node = make_node()
    in_reactor(node.storage.put_content, layout.image_json_key(IMAGE), b"{}")
    in_reactor(node.storage.exists, layout.image_ancestry_key(IMAGE))
    node.write_behind(TAG, b"t")
    in_reactor(node.storage.get_content, TAG)
    in_reactor(node.storage.remove, layout.repository_json_key(REPOSITORY))
    keys = redis.command("KEYS", "*")
    assert len(keys) == 4
    assert all(0 < redis.command("PTTL", key) <= TTL * 1000 for key in keys)


def warnings(events) -> list[dict]:
    return [event for event in events if event.get("log_namespace") == "twistreg.rediscache"
            and event["log_level"] == LogLevel.warn]


@pytest.mark.integration
def test_redis_killed_then_back(make_node, redis, in_reactor, events) -> None:
    node = make_node()
    json_key = layout.image_json_key(IMAGE)
    in_reactor(node.storage.put_content, json_key, b"{}")
    redis.kill()
    try:
        in_reactor(node.storage.put_content, TAG, b"during")
        assert in_reactor(node.storage.get_content, TAG) == b"during"
        started = time.monotonic()
        for _ in range(20):
            assert in_reactor(node.storage.get_content, json_key) == b"{}"
            assert in_reactor(node.storage.exists, TAG) is True
        # Once a call has failed, the others do not wait for Redis.
        assert time.monotonic() - started < 2
        assert len(warnings(events)) == 1
    finally:
        redis.restart()

    def cached_again() -> bool:
        in_reactor(node.storage.get_content, TAG)
        return entry(redis, TAG) == b"+during"

    wait_for(cached_again)
    assert len(warnings(events)) == 1


@pytest.mark.integration
def test_a_redis_that_stops_answering_costs_one_timeout(make_node, redis, in_reactor, events):
    node = make_node()
    in_reactor(node.storage.put_content, TAG, b"1")
    redis.command("CLIENT", "PAUSE", "3000", "ALL")
    started = time.monotonic()
    for _ in range(10):
        assert in_reactor(node.storage.get_content, TAG) == b"1"
    assert time.monotonic() - started < DEFAULT_TIMEOUT + 0.5
    assert len(warnings(events)) == 1
    in_reactor(node.storage.put_content, TAG, b"2")

    def cached_again() -> bool:
        return in_reactor(node.storage.get_content, TAG) == b"2" and entry(redis, TAG) == b"+2"

    wait_for(cached_again)


@pytest.mark.integration
def test_a_refused_password_is_an_unavailable_redis(redis_server, tmp_path, in_reactor, events):
    # A server of its own; the fixture's only skips (or fails on CI) where Redis is missing.
    server = services.RedisServer(services.redis_binary(), password="right").start()
    try:
        settings = RedisSettings(server.host, server.port, password="wrong")
        client = in_reactor(RedisClient, settings, reactor, purpose="cache_lru")
        try:
            storage = CachedStorage(LocalStorage(str(tmp_path)), client, "twistreg:test:", TTL)
            in_reactor(storage.put_content, TAG, b"1")
            assert in_reactor(storage.get_content, TAG) == b"1"
            assert server.command("DBSIZE") == 0
            assert len(warnings(events)) == 1 and "wrong" not in str(warnings(events))
        finally:
            in_reactor(client.close)
    finally:
        server.remove()


@pytest.mark.integration
def test_redis_flushed(make_node, redis, in_reactor) -> None:
    node = make_node()
    in_reactor(node.storage.put_content, TAG, b"1")
    redis.flush()
    assert in_reactor(node.storage.get_content, TAG) == b"1"
    assert entry(redis, TAG) == b"+1"


@pytest.mark.integration
def test_a_failed_update_is_undone_when_redis_answers(make_node, redis, in_reactor, events):
    """
    A node whose SET did not reach Redis deletes the entry before it reads Redis again;
    until then the others read the old entry (bounded by the TTL).
    """
    a, b = make_node(), make_node()
    in_reactor(a.storage.put_content, TAG, b"old")
    redis.command("CLIENT", "PAUSE", "1500", "WRITE")
    in_reactor(a.storage.put_content, TAG, b"new")
    assert warnings(events)
    assert in_reactor(b.storage.get_content, TAG) == b"old"

    def undone() -> bool:
        return in_reactor(a.storage.get_content, TAG) == b"new" and entry(redis, TAG) == b"+new"

    wait_for(undone)
    assert in_reactor(b.storage.get_content, TAG) == b"new"


# -- cache: the index's answers, shared ---------------------------------------------------------


@pytest.fixture
def index():
    stub = StubIndex()
    stub.valid.add("ok")
    stub.images["foo/bar"] = [IMAGE]
    stub.granted.add(("foo/bar", IMAGE))
    yield stub
    stub.close()


@pytest.mark.integration
def test_index_answers_are_shared_by_nodes(redis, index, tmp_path, in_reactor) -> None:
    settings = attrs.evolve(
        load_settings(None, None, {"storage_path": str(tmp_path)}, environ={},
                      system_config_path=None),
        standalone=False, index_endpoint=index.url)
    redis_settings = RedisSettings(redis.host, redis.port, password=redis.password)
    clients: list[RedisClient] = []

    def node() -> Authorizer:
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        client = RedisClient(redis_settings, reactor, purpose="cache")
        clients.append(client)
        storage = LocalStorage(str(tmp_path))
        return Authorizer(settings, storage, reactor, IndexClient(index.url, http, reactor, 5),
                          client)

    try:
        first, second = in_reactor(node), in_reactor(node)
        in_reactor(first.authorize, Access.READ, TOKEN, REPOSITORY)
        in_reactor(first.check_parent, TOKEN, IMAGE)
        assert len(index.calls) == 2
        in_reactor(second.authorize, Access.READ, TOKEN, REPOSITORY)
        in_reactor(second.check_parent, TOKEN, IMAGE)
        assert len(index.calls) == 2
        keys = redis.command("KEYS", "*")
        assert len(keys) == 2 and not any(b"signature" in key for key in keys)
        assert all(0 < redis.command("PTTL", key) <= settings.token_cache_ttl * 1000
                   for key in keys)
    finally:
        for client in clients:
            in_reactor(client.close)


# -- a served registry ---------------------------------------------------------------------------


def connections(redis) -> int:
    """Clients connected to Redis, the one asking excluded."""
    return len(redis.command("CLIENT", "LIST").splitlines()) - 1


@pytest.mark.integration
def test_close(make_node, redis, in_reactor) -> None:
    node = make_node()
    in_reactor(node.storage.put_content, TAG, b"1")
    assert connections(redis) == 1
    in_reactor(node.client.close)
    wait_for(lambda: connections(redis) == 0, 5)
    in_reactor(node.client.close)
    assert in_reactor(node.storage.get_content, TAG) == b"1"  # from storage


@pytest.mark.integration
def test_workers_connect_and_cache_the_master_does_not(redis, tmp_path) -> None:
    storage = tmp_path / "storage"
    config = tmp_path / "config.yml"
    flavor = dict(BUILTIN_FLAVOR, cache_lru={"host": redis.host, "port": redis.port})
    config.write_text(yaml.safe_dump({"dev": flavor}))
    server = Server(tmp_path, storage, "--config", str(config), workers=2).start()
    try:
        server.wait_for_workers(2)
        wait_for(lambda: connections(redis) == 2)  # one per worker, none in the master
        assert put_json(server, IMAGE, image_json(IMAGE)).status == 200
        json_key = layout.image_json_key(IMAGE)
        prefix = f"twistreg:local:{socket.gethostname()}:{storage}:"
        assert redis.command("GET", prefix + json_key) == b"+" + image_json(IMAGE)
    finally:
        server.stop()
    wait_for(lambda: connections(redis) == 0, 5)
