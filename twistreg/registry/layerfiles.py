# -*- test-case-name: tests.test_layerfiles -*-
"""
Reading layer archives: the R9 file list and the R10 diff (contract §4.10, §4.11).

Everything here is synchronous and may take long on big layers: callers run it in a thread.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from typing import BinaryIO

from twistreg.tarfiles import open_layer

_TYPE_LETTERS = {
    tarfile.REGTYPE: "f",
    tarfile.AREGTYPE: "f",
    tarfile.LNKTYPE: "l",
    tarfile.SYMTYPE: "s",
    tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b",
    tarfile.DIRTYPE: "d",
    tarfile.FIFOTYPE: "i",
    tarfile.CONTTYPE: "t",
    tarfile.GNUTYPE_LONGNAME: "L",
    tarfile.GNUTYPE_LONGLINK: "K",
    tarfile.GNUTYPE_SPARSE: "S",
}

_WHITEOUT = "/.wh."


def list_files(layer: BinaryIO) -> list[list]:
    """
    The R9 file list: C{[name, type, deleted, size, mtime, mode, uid, gid]} in archive order.

    Only top-level whiteouts (C{/.wh.x}, after C{./} became C{/}) count as deletions, and only
    top-level C{/.wh..wh.*} aufs metadata is dropped: that is what 0.9.1 did and what the
    contract keeps, so cached C{_files} written by either server agree.

    @raise twistreg.tarfiles.LayerFormatError: the layer is not a readable tar (an empty,
        0-byte layer included).
    """
    with open_layer(layer) as tar:
        return [entry for entry in map(_file_entry, tar) if entry is not None]


def _file_entry(member: tarfile.TarInfo) -> list | None:
    name = member.name
    deleted = False
    if name == ".":
        name = "/"
    if name.startswith("./"):
        name = "/" + name[2:]
    if name.startswith(_WHITEOUT):
        name = "/" + name[len(_WHITEOUT) :]
        deleted = True
    if name.startswith(_WHITEOUT):
        return None
    return [
        name,
        _TYPE_LETTERS.get(member.type, "u"),
        deleted,
        member.size,
        member.mtime,
        member.mode,
        member.uid,
        member.gid,
    ]


def diff(own_files: list[list], ancestors_files: Sequence[list[list] | None]) -> dict:
    """
    The R10 diff of an image's layer against its ancestors.

    The contract's step "if this layer marks it deleted → deleted" does not wait for an
    ancestor to have the name: at the first ancestor every whiteout of this layer goes to
    C{deleted}, as in 0.9.1's C{get_image_diff_json}. Only a base image (no ancestor at all)
    reports its whiteouts as C{created}. An ancestor without a layer still counts as a step.

    @param own_files: this image's R9 list.
    @param ancestors_files: the R9 lists of the ancestors, parent first; C{None} for an
        ancestor that has no layer.
    @return: C{{"changed": ..., "created": ..., "deleted": ...}}, each mapping a name to
        C{[type, deleted, size, mtime, mode, uid, gid]}.
    """
    pending = {entry[0]: entry[1:] for entry in own_files}
    result: dict[str, dict] = {"changed": {}, "created": {}, "deleted": {}}
    for ancestor_files in ancestors_files:
        if not pending:
            break
        ancestor = {entry[0]: entry[1:] for entry in ancestor_files or ()}
        for name, info in list(pending.items()):
            if info[1]:
                result["deleted"][name] = info
            elif name in ancestor:
                result["created" if ancestor[name][1] else "changed"][name] = info
            else:
                continue
            del pending[name]
    result["created"].update(pending)
    return result
