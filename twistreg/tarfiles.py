# -*- test-case-name: tests.test_layerfiles,tests.test_checksums -*-
"""
Opening layer archives, for everything that reads a layer as a tar: the R9 file list, the
R10 diff and tarsum.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

# tarfile wraps most decoding failures in ReadError, but not all: bzip2 or xz data going on past
# the end of the compressed stream raises EOFError, and the decompressors' own errors (OSError
# for bzip2, zlib.error, LZMAError) are the ones a change in tarfile's wrapping would let out.
_UNREADABLE = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class LayerFormatError(Exception):
    """The layer is not a readable tar archive (R9, R10: 400 C{Layer format not supported})."""


@contextmanager
def open_layer(layer: BinaryIO) -> Iterator[tarfile.TarFile]:
    """
    Open a plain, gzip, bzip2 or xz tar stream for one forward pass.

    Stream mode never seeks nor holds a member in memory, so multi-GiB layers are fine; the
    price is that members must be read in archive order, inside the C{with} block. Any failure
    to decode the archive, while opening or later while iterating or reading contents, leaves
    the block as L{LayerFormatError} so that callers have a single error to map to a 400.
    """
    try:
        # Names are decoded as UTF-8 whatever the locale, so results do not depend on the host.
        with tarfile.open(fileobj=layer, mode="r|*", encoding="utf-8") as tar:
            yield tar
    except _UNREADABLE as e:
        raise LayerFormatError(f"{type(e).__name__}: {e}") from e
