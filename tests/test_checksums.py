"""
Tests for L{twistreg.checksums}: the payload checksum and tarsum v0 (contract §8), and the
facts of a layer that the V1 ⇄ V2 bridge needs.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
import tracemalloc

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from tests.test_layerfiles import COMPRESSORS, RICH_MEMBERS, make_sparse_tar, make_tar, member
from tests.threads import HeldPool, InlineThreadsReactor, RealThreadsReactor
from twistreg.checksums import (
    GZIP_LAYER,
    TAR_LAYER,
    BackgroundHasher,
    DigestHasher,
    LayerFacts,
    LayerFactsHasher,
    PayloadHasher,
    feed,
    payload_checksum,
    tarsum,
)
from twistreg.tarfiles import LayerFormatError

ID_1 = b'{"id": "' + b"1" * 64 + b'"}'

PAYLOAD_VECTORS = [
    (b"", b"", "sha256:01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"),
    (b"test", b"", "sha256:f2ca1bb6c7e907d06dafe4687e579fce76b37e4e93b7605022da52e6ccc26fd2"),
    (
        ID_1,
        bytes(range(256)) * 20,
        "sha256:197379464f261af42d5244148efc61ed93f41c6f75c9f0e751fff25394503d5e",
    ),
    (
        b'{"id": "c0bbc6adf7089dd787b6a27f5baddd65bcd01aefb61ad7be0c45289c21d93e27"}',
        b"",
        "sha256:fa38baad7be70e30f8f68a7b616251e21e81da8288d4e1bd8a987cdf57aa52f6",
    ),
    (
        b'{"id": "a043bae1603803a839c0cb52f511d9cb8f68d9d9b0341314a5534ea92b26fa8a"}',
        b"some layer bytes",
        "sha256:0b85a7b2fc677385b19072dd54b26646041c3210096ad9ef83e250c626a167fa",
    ),
]


def test_id_vector_is_the_contract_one() -> None:
    """The third vector's J and L have the sizes the contract gives."""
    assert (len(ID_1), len(PAYLOAD_VECTORS[2][1])) == (74, 5120)


@pytest.mark.parametrize(("image_json", "layer", "expected"), PAYLOAD_VECTORS)
def test_payload_checksum(image_json: bytes, layer: bytes, expected: str) -> None:
    """Every vector of contract §8."""
    assert payload_checksum(image_json, layer) == expected


@pytest.mark.parametrize(("image_json", "layer", "expected"), PAYLOAD_VECTORS)
def test_hasher_in_chunks(image_json: bytes, layer: bytes, expected: str) -> None:
    """Feeding the layer in uneven chunks, as it arrives from the network, changes nothing."""
    hasher = PayloadHasher(image_json)
    for start in range(0, len(layer), 1000):
        hasher.update(layer[start : start + 1000])
    hasher.update(b"")
    assert hasher.checksum() == expected


# Crosses the 1 MiB read size of tarsum, so content is hashed over several reads.
BIG = bytes(range(256)) * 12289

TARSUM_MEMBERS = (
    *RICH_MEMBERS,
    member("./big", data=BIG, mode=0o600, mtime=1400000019, uname="alice", gname="staff"),
    member("./empty", mode=0o644, mtime=1400000020, uid=33, gid=33, uname="www", gname="www"),
)

# Reference values computed once, outside this suite, by docker-registry 0.9.1's own TarSum class
# (docker_registry/lib/checksums.py, Python 2 only) under Python 2.7, reading these very archives
# (plain, gzip and bzip2; Python 2 has no xz) with its xtarfile-patched tarfile in "r|*" mode.
# The 0.9.1 sample layers behind the contract's published values are not in its sdist.
EMPTY_TARSUM = "tarsum+sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
RICH_TARSUM = "tarsum+sha256:d709cf52154fc30289c859b85888df806dbbccef9b875d120cd828f66f118c4a"
BIG_TARSUM = "tarsum+sha256:ca5a44cb07db720c75eee2e8ba023a7c9d0de67bfe229f65728f199971ca49c2"
SPARSE_TARSUM = "tarsum+sha256:fd50c322786c007e95d4a76e0db9edde9dc9f2d37a33d2acbe1cc6124011e552"


def sum_of(image_json: bytes, layer: bytes) -> str:
    return tarsum(image_json, io.BytesIO(layer))


def test_tarsum_empty_archive() -> None:
    """No member: the sum is the hash of J alone."""
    assert sum_of(b"", make_tar()) == EMPTY_TARSUM


@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_tarsum_reference(compression: str, format: int) -> None:
    """0.9.1's value, whatever the compression and the way long names are stored."""
    layer = COMPRESSORS[compression](make_tar(*TARSUM_MEMBERS, format=format))
    assert sum_of(ID_1, layer) == RICH_TARSUM


def test_tarsum_big_member() -> None:
    """A member larger than one read is hashed whole."""
    assert sum_of(b"{}", make_tar(TARSUM_MEMBERS[-2])) == BIG_TARSUM


def test_tarsum_sparse_member() -> None:
    """A sparse member is hashed with its expanded content."""
    assert sum_of(b"{}", make_sparse_tar("./disk.img", b"sparse")) == SPARSE_TARSUM


def test_tarsum_ignores_member_order() -> None:
    """Member hashes are sorted, so the archive order does not matter."""
    forward = make_tar(*TARSUM_MEMBERS)
    backward = make_tar(*reversed(TARSUM_MEMBERS))
    assert forward != backward
    assert sum_of(ID_1, forward) == sum_of(ID_1, backward) == sum_of(ID_1, forward)


def test_tarsum_fractional_mtime() -> None:
    """A pax mtime with a fraction hashes as its whole seconds."""
    whole = make_tar(member("a", data=b"x", mtime=1400000000))
    fraction = make_tar(member("a", data=b"x", mtime=1400000000.75), format=tarfile.PAX_FORMAT)
    later = make_tar(member("a", data=b"x", mtime=1400000001))
    assert sum_of(b"", fraction) == sum_of(b"", whole) != sum_of(b"", later)


@pytest.mark.parametrize(
    "changed",
    [
        member("a", data=b"content", mtime=1400000001),
        member("a", data=b"contenT", mtime=1400000000),
        member("a", data=b"content", mtime=1400000000, mode=0o600),
        member("a", data=b"content", mtime=1400000000, uname="root"),
        member("b", data=b"content", mtime=1400000000),
        member("a", tarfile.DIRTYPE, mtime=1400000000),
    ],
    ids=["mtime", "content", "mode", "uname", "name", "type"],
)
def test_tarsum_changes(changed: tuple) -> None:
    """Any hashed field of a member, or its content, changes the sum; so does J."""
    original = make_tar(member("a", data=b"content", mtime=1400000000))
    assert sum_of(b"{}", make_tar(changed)) != sum_of(b"{}", original)
    assert sum_of(b'{"a": 1}', original) != sum_of(b"{}", original)


def test_tarsum_not_a_tar() -> None:
    """An unreadable layer raises the same error as the file list."""
    with pytest.raises(LayerFormatError):
        sum_of(b"{}", b"not a tar" * 100)


def test_background_hasher_with_inline_threads() -> None:
    """With a pool that runs jobs at once, every update is hashed before it returns."""
    reactor = InlineThreadsReactor()
    hasher = BackgroundHasher(reactor, PayloadHasher(b"json"), limit=1)
    layer = bytes(range(256)) * 5000
    for i in range(0, len(layer), 4096):
        assert hasher.update(layer[i : i + 4096]) is None
    result = ensureDeferred(hasher.checksum())
    assert result.result == payload_checksum(b"json", layer)
    assert reactor.pool.jobs == len(range(0, len(layer), 4096))


def test_background_hasher_batches_what_is_queued() -> None:
    """
    Chunks wait for a batch's worth (half the limit here), and those queued while the pool
    is busy go to it as one job, in order; the checksum takes what is left.
    """
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), PayloadHasher(b"j"), limit=4)
    hasher.update(b"a")
    assert pool.held == []
    for chunk in (b"b", b"c", b"d", b"e"):
        hasher.update(chunk)
    assert len(pool.held) == 1
    pool.run_next()
    assert len(pool.held) == 1
    pool.run_next()
    assert pool.held == []
    hasher.update(b"f")
    result = ensureDeferred(hasher.checksum())
    assert not result.called
    pool.run_next()
    assert result.result == payload_checksum(b"j", b"abcdef")


def test_background_hasher_hops_once_per_batch() -> None:
    """A fast pool is not given every small chunk from the socket: one job per MiB."""
    reactor = InlineThreadsReactor()
    hasher = BackgroundHasher(reactor, PayloadHasher(b"j"))
    layer = b"x" * (4 * 1024 * 1024)
    for start in range(0, len(layer), 65536):
        assert hasher.update(layer[start : start + 65536]) is None
    result = ensureDeferred(hasher.checksum())
    assert result.result == payload_checksum(b"j", layer)
    assert reactor.pool.jobs == 4


def test_background_hasher_applies_back_pressure() -> None:
    """Past the limit the caller is asked to wait until the pool has caught up."""
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), PayloadHasher(b"j"), limit=1000)
    assert hasher.update(b"a" * 600) is None
    wait = hasher.update(b"b" * 600)
    assert wait is not None
    assert hasher.update(b"c" * 10) is wait
    pool.run_next()
    assert not wait.called  # 610 bytes still wait: more than half the limit
    pool.run_next()
    assert wait.called
    assert hasher.update(b"d") is None


def test_background_hasher_stop_forgets_the_rest() -> None:
    """stop() drops what is queued and releases a waiting caller; later chunks are ignored."""
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), PayloadHasher(b"j"), limit=10)
    hasher.update(b"a" * 5)
    wait = hasher.update(b"b" * 20)
    hasher.stop()
    assert wait.called
    pool.run_next()
    assert hasher.update(b"c") is None
    assert pool.held == []


def test_background_hasher_failure_reaches_checksum() -> None:
    """A job that fails in the pool fails the checksum instead of leaving it waiting."""
    hasher = BackgroundHasher(InlineThreadsReactor(), PayloadHasher(b"j"))
    hasher.update("not bytes")  # type: ignore[arg-type]
    failures: list = []
    ensureDeferred(hasher.checksum()).addErrback(failures.append)
    assert failures[0].check(TypeError)


def test_background_hasher_in_real_threads() -> None:
    """A real pool hashes a multi-MiB stream, given in uneven chunks with back-pressure."""
    reactor = RealThreadsReactor()
    try:
        hasher = BackgroundHasher(reactor, PayloadHasher(ID_1), limit=256 * 1024)
        layer = hashlib.sha512(b"seed").digest() * (6 * 1024 * 1024 // 64 + 7)
        paused = 0
        for start in range(0, len(layer), 65531):
            wait = hasher.update(layer[start : start + 65531])
            if wait is not None:
                paused += 1
                reactor.run_until(lambda wait=wait: wait.called)
        result = ensureDeferred(hasher.checksum())
        reactor.run_until(lambda: result.called)
        assert result.result == payload_checksum(ID_1, layer)
        assert paused > 0
    finally:
        reactor.stop()


@pytest.mark.parametrize(
    ("algorithm", "data", "expected"),
    [
        ("sha256", b"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            "sha512",
            b"abc",
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ],
)
def test_digest_hasher(algorithm: str, data: bytes, expected: str) -> None:
    """A V2 digest as clients write it, whatever the chunks the bytes came in."""
    hasher = DigestHasher(algorithm)
    for byte in range(len(data)):
        hasher.update(data[byte : byte + 1])
    assert hasher.checksum() == expected


def test_background_hasher_runs_any_hasher() -> None:
    """The pool runs a digest as it runs the payload checksum: nothing of V1 is mixed in."""
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), DigestHasher("sha512"), limit=8)
    blob = b"blob bytes " * 3
    assert hasher.update(blob[:11]) is not None
    hasher.update(blob[11:])
    result = ensureDeferred(hasher.checksum())
    while pool.held:
        pool.run_next()
    assert result.result == "sha512:" + hashlib.sha512(blob).hexdigest()


class _Writer:
    """A storage writer that asks for a pause after every write."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.waiting: Deferred[None] = Deferred()

    def write(self, data: bytes) -> Deferred[None]:
        self.taken.append(data)
        return self.waiting


def test_feed_waits_for_the_slower_of_hasher_and_writer() -> None:
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), DigestHasher(), limit=2)
    writer = _Writer()
    both = feed(hasher, writer, b"abc")
    assert writer.taken == [b"abc"] and both is not None
    writer.waiting.callback(None)
    assert not both.called
    pool.run_next()
    assert both.result is None


def test_feed_without_a_writer_only_hashes() -> None:
    hasher = BackgroundHasher(InlineThreadsReactor(), DigestHasher())
    assert feed(hasher, None, b"abc") is None
    expected = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert ensureDeferred(hasher.checksum()).result == expected


def test_feed_fails_with_the_first_failure_itself() -> None:
    """A storage failure while both wait is that failure, not a FirstError."""
    pool = HeldPool()
    hasher = BackgroundHasher(InlineThreadsReactor(pool), DigestHasher(), limit=2)
    writer = _Writer()
    both = feed(hasher, writer, b"abc")
    writer.waiting.errback(OSError("disk gone"))
    pool.run_next()
    assert both.result.check(OSError)
    both.addErrback(lambda _: None)


# -- the facts of a layer, for the V1 ⇄ V2 bridge ---------------------------------------------

FILE_TAR = make_tar(member("etc/hello", data=b"hello world\n", mtime=1400000000))
EMPTY_TAR = make_tar()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def facts_of(layer: bytes, piece: int = 1000) -> LayerFacts:
    hasher = LayerFactsHasher()
    for start in range(0, len(layer), piece):
        hasher.update(layer[start : start + piece])
    return hasher.facts()


@pytest.mark.parametrize(
    ("layer", "tar", "compression", "media_type"),
    [
        (gzip.compress(FILE_TAR, mtime=0), FILE_TAR, "gzip", GZIP_LAYER),
        (FILE_TAR, FILE_TAR, "none", TAR_LAYER),
        # A gzip file made of several members, as pigz or cat of gzip files makes them.
        (gzip.compress(FILE_TAR[:700]) + gzip.compress(FILE_TAR[700:]), FILE_TAR, "gzip",
         GZIP_LAYER),
    ],
    ids=["gzip", "plain", "gzip-members"],
)
def test_layer_facts(layer: bytes, tar: bytes, compression: str, media_type: str) -> None:
    """The digest of the bytes as stored, the diff id of the tar inside."""
    assert facts_of(layer) == LayerFacts(
        digest=sha256(layer), size=len(layer), compression=compression, diff_id=sha256(tar),
        media_type=media_type, empty=False, problem=None)


@pytest.mark.parametrize(
    ("layer", "compression", "tar"),
    [(b"", "none", b""), (EMPTY_TAR, "none", EMPTY_TAR), (bytes(1024), "none", bytes(1024)),
     (gzip.compress(EMPTY_TAR), "gzip", EMPTY_TAR), (gzip.compress(b""), "gzip", b"")],
    ids=["zero-bytes", "empty-tar", "two-zero-blocks", "gzip-empty-tar", "gzip-of-nothing"],
)
def test_empty_layers(layer: bytes, compression: str, tar: bytes) -> None:
    """No member: an empty layer, whatever wraps its zero blocks."""
    facts = facts_of(layer)
    assert (facts.empty, facts.bridgeable, facts.compression) == (True, True, compression)
    assert (facts.digest, facts.diff_id) == (sha256(layer), sha256(tar))


def test_a_member_of_zeros_is_no_empty_layer() -> None:
    """A file full of zeros is a member: its header is not zero."""
    assert not facts_of(make_tar(member("zeros", data=bytes(4096)))).empty


GZIPPED = gzip.compress(FILE_TAR, mtime=0)
CORRUPT = GZIPPED[:12] + bytes(60) + GZIPPED[72:]


@pytest.mark.parametrize(
    ("layer", "compression", "problem"),
    [
        (bz2.compress(FILE_TAR), "bzip2", "bzip2 layers have no media type V2 clients pull"),
        (lzma.compress(FILE_TAR), "xz", "xz layers have no media type V2 clients pull"),
        (GZIPPED[:-9], "gzip", "truncated gzip stream"),
        (GZIPPED[:2], "gzip", "truncated gzip stream"),
        # zlib's own message follows, in words that change with its version.
        (CORRUPT, "gzip", "corrupt gzip stream (Error -3 "),
        (GZIPPED + b"junk", "gzip", "corrupt gzip stream (Error -3 "),
        (b"some layer bytes", "none", "not a tar archive"),
        (b"x" * 4096, "none", "not a tar archive"),
        (bytes(512) + FILE_TAR, "none", "not a tar archive"),
        (gzip.compress(b"not a tar " * 100), "gzip", "not a tar archive"),
    ],
    ids=["bzip2", "xz", "truncated", "header-only", "corrupt", "trailing", "short", "junk",
         "after-the-end", "gzip-of-junk"],
)
def test_layers_that_cannot_be_bridged(layer: bytes, compression: str, problem: str) -> None:
    """Never an error: the facts say why, and still give the stored bytes' digest and size."""
    facts = facts_of(layer)
    assert facts.problem is not None and facts.problem.startswith(problem)
    assert facts == LayerFacts(
        digest=sha256(layer), size=len(layer), compression=compression, diff_id=None,
        media_type=None, empty=False, problem=facts.problem)


@pytest.mark.parametrize("layer", [GZIPPED, FILE_TAR, CORRUPT, b"", b"\x1f", b"BZh91"])
def test_layer_facts_do_not_depend_on_the_pieces(layer: bytes) -> None:
    """A byte at a time (magic numbers split included) or all at once: the same facts."""
    assert facts_of(layer, piece=1) == facts_of(layer, piece=len(layer) or 1)


def test_inflating_keeps_memory_bounded() -> None:
    """64 MiB of zeros in 64 KiB of gzip: inflated a step at a time, never at once."""
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)
    assert len(bomb) < 128 * 1024
    tracemalloc.start()
    try:
        facts = facts_of(bomb, piece=len(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts.empty and facts.diff_id == sha256(bytes(64 << 20))
    assert peak < 8 << 20


def test_layer_facts_json_round_trip() -> None:
    for facts in (facts_of(GZIPPED), facts_of(CORRUPT), facts_of(b"")):
        assert LayerFacts.from_json(facts.to_json()) == facts
    assert json.loads(facts_of(FILE_TAR).to_json()) == {
        "digest": sha256(FILE_TAR), "size": len(FILE_TAR), "compression": "none",
        "diff_id": sha256(FILE_TAR), "media_type": TAR_LAYER, "empty": False, "problem": None}


def test_layer_facts_json_keeps_room_for_more_keys() -> None:
    document = json.loads(facts_of(GZIPPED).to_json())
    document["added_later"] = 1
    assert LayerFacts.from_json(json.dumps(document).encode()) == facts_of(GZIPPED)


@pytest.mark.parametrize(
    "change",
    [{"digest": "sha256:abc"}, {"size": -1}, {"size": "12"}, {"compression": "zstd"},
     {"media_type": "text/plain"}, {"empty": 0}, {"diff_id": None},
     {"problem": "truncated gzip stream"}, {"problem": 3}],
)
def test_layer_facts_json_refused(change: dict) -> None:
    """Only a document L{LayerFacts.to_json} could have written reads back."""
    document = dict(json.loads(facts_of(GZIPPED).to_json()), **change)
    with pytest.raises(ValueError):
        LayerFacts.from_json(json.dumps(document).encode())


@pytest.mark.parametrize("stored", [b"", b"[]", b"{}", b"\xff", b'{"digest": 1}', b"null"])
def test_layer_facts_json_not_a_document(stored: bytes) -> None:
    with pytest.raises(ValueError):
        LayerFacts.from_json(stored)


