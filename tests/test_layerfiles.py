"""Tests for L{twistreg.registry.layerfiles} and L{twistreg.tarfiles}: R9 files, R10 diff."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile

import pytest

from twistreg.registry.layerfiles import diff, list_files
from twistreg.tarfiles import LayerFormatError

COMPRESSORS = {
    "plain": lambda data: data,
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


def member(name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"", **fields) -> tuple:
    """A tar member to give to L{make_tar}: header fields and content."""
    info = tarfile.TarInfo(name)
    info.type = type
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(*members: tuple, format: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar archive holding C{members}, in that order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format, encoding="utf-8") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def make_sparse_tar(name: str, data: bytes) -> bytes:
    """
    A tar archive holding one GNU sparse file with a single data extent.

    tarfile cannot write sparse members, so write a regular one and turn its header into a
    GNU sparse header: type C{S}, one extent covering the data, real size, fresh checksum.
    """
    raw = bytearray(make_tar(member(name, data=data)))
    size = f"{len(data):011o}\0".encode()
    raw[156:157] = tarfile.GNUTYPE_SPARSE
    raw[386:398] = f"{0:011o}\0".encode()
    raw[398:410] = size
    raw[483:495] = size
    raw[148:156] = b" " * 8
    raw[148:156] = f"{sum(raw[:512]):06o}\0 ".encode()
    return bytes(raw)


# One of each kind of member R9 distinguishes, with distinct numbers so that a field taken
# from the wrong place shows.
RICH_MEMBERS = (
    member(".", tarfile.DIRTYPE, mode=0o755, mtime=1400000001, uid=1, gid=2),
    member("./etc", tarfile.DIRTYPE, mode=0o750, mtime=1400000002, uid=3, gid=4),
    member("./etc/passwd", data=b"root:x:0:0\n", mode=0o644, mtime=1400000003, uid=5, gid=6),
    member("./bin/sh", tarfile.SYMTYPE, linkname="busybox", mode=0o777, mtime=1400000004),
    member("./bin/ls", tarfile.LNKTYPE, linkname="./bin/busybox", mode=0o755, mtime=5),
    member("./run/fifo", tarfile.FIFOTYPE, mode=0o600, mtime=1400000006, uid=7, gid=8),
    member("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, mtime=7),
    member("./dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660, mtime=8),
    member("./data", tarfile.CONTTYPE, data=b"12345", mode=0o640, mtime=9),
    member("./odd", b"Z", data=b"xy", mode=0o400, mtime=10),
    member("./.wh.foo", mode=0o644, mtime=11),
    member("./.wh..wh.plnk", tarfile.DIRTYPE, mode=0o700, mtime=12),
    member("./.wh..wh..opq", mode=0o644, mtime=13),
    member(".wh.bar", mode=0o644, mtime=14),
    member("./etc/.wh.baz", mode=0o644, mtime=15),
    member("/.wh.abs", mode=0o644, mtime=16),
    member("usr/" + "x" * 150, data=b"long", mode=0o644, mtime=17),
    member("./caf\u00e9", data="\u00e9".encode(), mode=0o644, mtime=18, uid=1000, gid=1000),
)

RICH_FILES = [
    ["/", "d", False, 0, 1400000001, 493, 1, 2],
    ["/etc", "d", False, 0, 1400000002, 488, 3, 4],
    ["/etc/passwd", "f", False, 11, 1400000003, 420, 5, 6],
    ["/bin/sh", "s", False, 0, 1400000004, 511, 0, 0],
    ["/bin/ls", "l", False, 0, 5, 493, 0, 0],
    ["/run/fifo", "i", False, 0, 1400000006, 384, 7, 8],
    ["/dev/null", "c", False, 0, 7, 438, 0, 0],
    ["/dev/sda", "b", False, 0, 8, 432, 0, 0],
    ["/data", "t", False, 5, 9, 416, 0, 0],
    ["/odd", "u", False, 2, 10, 256, 0, 0],
    ["/foo", "f", True, 0, 11, 420, 0, 0],
    [".wh.bar", "f", False, 0, 14, 420, 0, 0],
    ["/etc/.wh.baz", "f", False, 0, 15, 420, 0, 0],
    ["/abs", "f", True, 0, 16, 420, 0, 0],
    ["usr/" + "x" * 150, "f", False, 4, 17, 420, 0, 0],
    ["/caf\u00e9", "f", False, 2, 18, 420, 1000, 1000],
]


def test_contract_example() -> None:
    """The example of contract §4.10."""
    layer = make_tar(
        member("etc", tarfile.DIRTYPE, mode=0o755, mtime=1400000000),
        member("etc/hello.txt", data=b"hello world\n", mode=0o644, mtime=1400000000),
    )
    assert list_files(io.BytesIO(layer)) == [
        ["etc", "d", False, 0, 1400000000, 493, 0, 0],
        ["etc/hello.txt", "f", False, 12, 1400000000, 420, 0, 0],
    ]


@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_every_kind_of_member(compression: str, format: int) -> None:
    """Names, whiteouts, type letters and header numbers, whatever the compression."""
    layer = COMPRESSORS[compression](make_tar(*RICH_MEMBERS, format=format))
    assert list_files(io.BytesIO(layer)) == RICH_FILES


def test_directory_trailing_slash_dropped() -> None:
    """Directories are listed without the trailing slash their header may carry."""
    layer = make_tar(member("./", tarfile.DIRTYPE), member("./etc/", tarfile.DIRTYPE))
    assert [entry[0] for entry in list_files(io.BytesIO(layer))] == ["/", "/etc"]


def test_sparse_file() -> None:
    """A GNU sparse file is type C{S} with its real size."""
    layer = make_sparse_tar("./disk.img", b"sparse")
    assert list_files(io.BytesIO(layer)) == [["/disk.img", "S", False, 6, 0, 420, 0, 0]]


def test_empty_archive() -> None:
    """An archive with no member (what docker sends for an empty layer) lists nothing."""
    assert list_files(io.BytesIO(make_tar())) == []
    assert list_files(io.BytesIO(gzip.compress(make_tar()))) == []


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not a tar archive" * 40, id="garbage"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"garbage" * 100, id="gzip-header-garbage"),
        pytest.param(gzip.compress(b"garbage" * 100), id="gzip-of-garbage"),
        pytest.param(bz2.compress(b"garbage" * 100), id="bzip2-of-garbage"),
        pytest.param(lzma.compress(b"garbage" * 100), id="xz-of-garbage"),
        pytest.param(
            bz2.compress(make_tar(member("a", data=b"abc"))[:1024]) + b"junk" * 200,
            id="bzip2-then-junk",
        ),
        pytest.param(
            lzma.compress(make_tar(member("a", data=b"abc"))[:1024]) + b"junk" * 200,
            id="xz-then-junk",
        ),
    ],
)
def test_not_a_tar(layer: bytes) -> None:
    """Whatever tarfile or a decompressor raises, callers see one error."""
    with pytest.raises(LayerFormatError):
        list_files(io.BytesIO(layer))


def entry(name: str, deleted: bool = False, size: int = 1, type: str = "f") -> list:
    """An R9 entry with the fields that matter to the diff and fixed others."""
    return [name, type, deleted, size, 1400000000, 420, 0, 0]


def test_diff_base_image() -> None:
    """Without ancestors everything, whiteouts included, is created."""
    files = [entry("/etc", type="d"), entry("/etc/passwd"), entry("/gone", deleted=True)]
    assert diff(files, []) == {
        "changed": {},
        "created": {
            "/etc": ["d", False, 1, 1400000000, 420, 0, 0],
            "/etc/passwd": ["f", False, 1, 1400000000, 420, 0, 0],
            "/gone": ["f", True, 1, 1400000000, 420, 0, 0],
        },
        "deleted": {},
    }


def test_diff_changed_and_created() -> None:
    """A name the parent has is changed; a name no ancestor has is created."""
    own = [entry("/etc/passwd", size=20), entry("/new")]
    parent = [entry("/etc/passwd", size=10), entry("/other")]
    assert diff(own, [parent]) == {
        "changed": {"/etc/passwd": ["f", False, 20, 1400000000, 420, 0, 0]},
        "created": {"/new": ["f", False, 1, 1400000000, 420, 0, 0]},
        "deleted": {},
    }


def test_diff_deleted_by_whiteout() -> None:
    """A whiteout is deleted, whether or not the parent has the name (as in 0.9.1)."""
    own = [entry("/etc/passwd", deleted=True, size=0), entry("/never", deleted=True, size=0)]
    parent = [entry("/etc/passwd")]
    assert diff(own, [parent]) == {
        "changed": {},
        "created": {},
        "deleted": {
            "/etc/passwd": ["f", True, 0, 1400000000, 420, 0, 0],
            "/never": ["f", True, 0, 1400000000, 420, 0, 0],
        },
    }


def test_diff_created_after_deleted() -> None:
    """A name the nearest ancestor having it marks deleted is created again."""
    own = [entry("/etc/passwd", size=30)]
    parent = [entry("/etc/passwd", deleted=True, size=0)]
    grandparent = [entry("/etc/passwd", size=10)]
    assert diff(own, [parent, grandparent]) == {
        "changed": {},
        "created": {"/etc/passwd": ["f", False, 30, 1400000000, 420, 0, 0]},
        "deleted": {},
    }


def test_diff_walks_up_the_ancestry() -> None:
    """Past a parent that lacks a name, or has no layer, the older ancestors decide."""
    own = [entry("/a"), entry("/b"), entry("/c"), entry("/gone", deleted=True)]
    ancestors = [
        None,
        [entry("/x")],
        [entry("/a", size=5), entry("/b", deleted=True)],
        [entry("/c"), entry("/b")],
    ]
    assert diff(own, ancestors) == {
        "changed": {
            "/a": ["f", False, 1, 1400000000, 420, 0, 0],
            "/c": ["f", False, 1, 1400000000, 420, 0, 0],
        },
        "created": {"/b": ["f", False, 1, 1400000000, 420, 0, 0]},
        "deleted": {"/gone": ["f", True, 1, 1400000000, 420, 0, 0]},
    }


def test_diff_of_listed_layers() -> None:
    """The diff works on what L{list_files} returns, whiteouts matching the names they hide."""
    parent = make_tar(
        member("./etc", tarfile.DIRTYPE),
        member("./etc/passwd", data=b"root\n"),
        member("./tmp", tarfile.DIRTYPE),
    )
    child = make_tar(member("./etc/passwd", data=b"root\nuser\n"), member("./.wh.tmp"))
    result = diff(list_files(io.BytesIO(child)), [list_files(io.BytesIO(parent))])
    assert result == {
        "changed": {"/etc/passwd": ["f", False, 10, 0, 420, 0, 0]},
        "created": {},
        "deleted": {"/tmp": ["f", True, 0, 0, 420, 0, 0]},
    }
