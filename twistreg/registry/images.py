# -*- test-case-name: tests.test_images -*-
"""
The image rules: json, layer, checksum, ancestry, files and diff (R3–R10).

Written against L{IStorage} with plain values in and out; failures are L{RegistryError}s
carrying the contract's messages, raised in each route's check order.
"""

from __future__ import annotations

import json
import threading
from typing import Callable, Optional

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistreg.checksums import BackgroundHasher, LayerFacts, PayloadHasher, feed
from twistreg.errors import RegistryError
from twistreg.layout import (
    image_ancestry_key,
    image_checksum_key,
    image_diff_key,
    image_files_key,
    image_inprogress_key,
    image_json_key,
    image_layer_key,
    is_image_id,
    require_image_id,
)
from twistreg.lru import BoundedLRU
from twistreg.registry import layerfiles
from twistreg.registry.auth import Authorizer, Token
from twistreg.registry.documents import parse_json
from twistreg.registry.layerfacts import Outcome, fill_layer_facts
from twistreg.storage.interface import (
    IStorage,
    IWriter,
    KeyNotFound,
    StorageUnavailable,
)
from twistreg.tarfiles import LayerFormatError

log = Logger()

#: An extension hook of R8: called with the parsed image JSON; a non-None result rejects it.
ImageJsonHook = Callable[[dict], Optional[str]]

_IN_PROGRESS = RegistryError(400, "Image is being uploaded, retry later")


def not_found() -> RegistryError:
    return RegistryError(404, "Image not found")


def parse_checksums(stored: bytes) -> list[str]:
    """C{_checksum} is a JSON list; 0.9.1 also wrote a plain string, read as one entry."""
    try:
        value = parse_json(stored)
    except ValueError:
        if stored.lstrip().startswith((b"[", b"{")):
            return []  # a broken document, not 0.9.1's plain string
        return [stored.decode("utf-8", "replace")]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


#: Bytes of complete images' json, checksums and ancestry kept per process: once an image's
#: in-progress marker is gone, they cannot be written again (R5, R8 and the checksum PUT
#: answer 409), and once its layer is there too, the layer cannot be replaced.
COMPLETED_BUDGET = 2 << 20
#: Seconds such a value is served before it is read again, so that an image removed from
#: storage by hand or by a collector stops being served soon after.
COMPLETED_MAX_AGE = 60.0


class LayerUpload:
    """
    A layer body on its way into storage, hashed as it streams (R4).

    Created by L{Images.begin_layer_upload} once the checks passed; the web layer feeds it
    the body and calls L{commit} when the body is complete, or L{abort}.
    """

    def __init__(
        self, storage: IStorage, image_id: str, writer: IWriter,
        hasher: BackgroundHasher[PayloadHasher],
    ) -> None:
        self._storage = storage
        self._image_id = image_id
        self._writer = writer
        self._hasher = hasher
        self.size = 0

    def write(self, data: bytes) -> defer.Deferred | None:
        """Hash and store one piece of the body; a Deferred result asks for a pause."""
        self.size += len(data)
        return feed(self._hasher, self._writer, data)

    async def commit(self) -> None:
        """Publish the layer, then its C{_checksum}; what did not get published is dropped."""
        try:
            checksum = await self._hasher.checksum()
            await self._writer.commit()
        except BaseException:
            # An S3 multipart upload would otherwise wait a day for the purge.
            self.abort()
            raise
        await self._storage.put_content(
            image_checksum_key(self._image_id), json.dumps([checksum]).encode()
        )
        log.info(
            "stored layer {image_id} ({size} bytes, {checksum})",
            image_id=self._image_id,
            size=self.size,
            checksum=checksum,
        )

    def abort(self) -> None:
        """Forget the body: the stored layer, if any, is unchanged."""
        self._hasher.stop()
        self._writer.abort()


class Images:
    """
    The image routes' rules over one storage.

    The C{check_*} methods run a route's checks in the contract's order up to the existence
    step, and say whether the resource exists, so that the caller can ask a mirror first.

    @param reactor: runs tar parsing off the reactor thread, and ages what is kept of
        complete images.
    @param auth: the private-repository and parent checks (§5.4), and R8's image list.
    @param json_hooks: R8's extension hooks, in order.
    """

    def __init__(
        self,
        storage: IStorage,
        reactor: IReactorThreads,
        auth: Authorizer,
        json_hooks: tuple[ImageJsonHook, ...] = (),
    ) -> None:
        self._storage = storage
        self._reactor = reactor
        self._auth = auth
        self._json_hooks = json_hooks
        #: ("json", id): the json, layer size and checksums of a complete image;
        #: ("ancestry", id): the ancestry of an image no longer in progress.
        self._completed = BoundedLRU(COMPLETED_BUDGET, COMPLETED_MAX_AGE, reactor,
                                     name="v1_images")

    def _known_complete(self, image_id: str) -> bool:
        return (self._completed.get(("json", image_id)) is not None
                or self._completed.get(("ancestry", image_id)) is not None)

    async def _require_not_in_progress(self, image_id: str) -> None:
        if await self._storage.exists(image_inprogress_key(image_id)):
            raise _IN_PROGRESS

    async def _require_readable(self, image_id: str) -> None:
        """Check steps shared by the image GETs: the id, then the in-progress marker."""
        require_image_id(image_id)
        if not self._known_complete(image_id):
            await self._require_not_in_progress(image_id)

    # R6
    async def check_json(self, image_id: str, authorization: str | None) -> bool:
        """R6 checks up to existence: whether the json exists."""
        await self._require_readable(image_id)
        await self._auth.check_private(authorization, image_id)
        if self._completed.get(("json", image_id)) is not None:
            return True
        return await self._storage.exists(image_json_key(image_id))

    async def get_json(self, image_id: str) -> tuple[bytes, int | None, list[str]]:
        """
        The stored json, the layer size (None without a layer) and the payload checksums,
        once L{check_json} found the json (so the image is not in progress).
        """
        key = ("json", image_id)
        completed = self._completed.get(key)
        if completed is not None:
            body, size, checksums = completed
            return body, size, list(checksums)
        body = await self._storage.get_content(image_json_key(image_id))
        try:
            size: int | None = await self._storage.size(image_layer_key(image_id))
        except KeyNotFound:
            size = None
        try:
            checksums = parse_checksums(
                await self._storage.get_content(image_checksum_key(image_id))
            )
        except KeyNotFound:
            checksums = []
        if size is not None:
            # Complete: nothing of this can be written again.
            self._completed.keep(key, (body, size, tuple(checksums)),
                                 len(body) + sum(map(len, checksums)))
        return body, size, checksums

    # R7
    async def check_ancestry(self, image_id: str) -> bool:
        """R7 checks up to existence (no private check, as in 0.9.1)."""
        await self._require_readable(image_id)
        if self._completed.get(("ancestry", image_id)) is not None:
            return True
        return await self._storage.exists(image_ancestry_key(image_id))

    async def get_ancestry(self, image_id: str) -> list[str]:
        """
        The ancestry list, re-serialized by the caller, once L{check_ancestry} found it.  An
        unreadable file is answered as a missing one: 404 C{Image not found}.
        """
        key = ("ancestry", image_id)
        kept = self._completed.get(key)
        if kept is not None:
            return list(kept)
        ancestry = await self._read_ancestry(image_id)
        if ancestry is None:
            raise not_found()
        # Not in progress: the ancestry cannot be written again.
        self._completed.keep(key, tuple(ancestry), 72 * len(ancestry))
        return ancestry

    async def _read_ancestry(self, image_id: str) -> list[str] | None:
        """The stored ancestry; None when it is missing or not a JSON list of strings."""
        key = image_ancestry_key(image_id)
        try:
            ancestry = parse_json(await self._storage.get_content(key))
        except KeyNotFound:
            return None
        except ValueError as error:
            log.warn("unreadable {key}: {error}", key=key, error=error)
            return None
        if not (isinstance(ancestry, list) and all(isinstance(a, str) for a in ancestry)):
            log.warn("unreadable {key}: not a list of ids", key=key)
            return None
        return ancestry

    # R3
    async def check_layer(self, image_id: str, authorization: str | None) -> int | None:
        """
        R3 checks up to existence, the in-progress marker first (as 0.9.1).

        @return: the layer size, None when there is no layer.
        """
        completed = self._completed.get(("json", image_id))
        if is_image_id(image_id) and completed is None:
            await self._require_not_in_progress(image_id)
        require_image_id(image_id)
        await self._auth.check_private(authorization, image_id)
        if completed is not None:
            return completed[1]
        try:
            return await self._storage.size(image_layer_key(image_id))
        except KeyNotFound:
            return None

    # R4
    async def begin_layer_upload(self, image_id: str) -> LayerUpload:
        """R4 checks, then a L{LayerUpload} seeded with the stored json for the checksum."""
        require_image_id(image_id)
        try:
            image_json = await self._storage.get_content(image_json_key(image_id))
        except KeyNotFound:
            raise not_found() from None
        if await self._storage.exists(image_layer_key(image_id)) and not await self._storage.exists(
            image_inprogress_key(image_id)
        ):
            raise RegistryError(409, "Image already exists")
        writer = await self._storage.open_writer(image_layer_key(image_id))
        hasher = BackgroundHasher(self._reactor, PayloadHasher(image_json))
        return LayerUpload(self._storage, image_id, writer, hasher)

    # R5
    async def put_checksum(self, image_id: str, payload_checksum: str | None) -> None:
        """
        R5: mark the image complete when the client's payload checksum matches ours.

        @param payload_checksum: the first C{X-Docker-Checksum-Payload} value, or None.
        """
        require_image_id(image_id)
        if payload_checksum is None:
            raise RegistryError(
                412,
                "X-Docker-Checksum-Payload not set.  If you are using the Docker daemon, "
                "you should upgrade to version 0.10 or later",
            )
        if not payload_checksum:
            raise RegistryError(400, "Missing Image's checksum")
        if not await self._storage.exists(image_json_key(image_id)):
            raise not_found()
        if not await self._storage.exists(image_inprogress_key(image_id)):
            raise RegistryError(409, "Cannot set this image checksum")
        try:
            stored = await self._storage.get_content(image_checksum_key(image_id))
        except KeyNotFound:
            raise RegistryError(400, "Image layer not uploaded") from None
        if payload_checksum not in parse_checksums(stored):
            log.info("checksum mismatch for {image_id}: {given}",
                     image_id=image_id, given=payload_checksum)
            raise RegistryError(400, "Checksum mismatch")
        await self._storage.remove(image_inprogress_key(image_id))
        self._describe_layer(image_id)

    def _describe_layer(self, image_id: str) -> None:
        """
        Give the complete image's layer its facts (L{fill_layer_facts}) in the background:
        the push has its answer meanwhile.
        """

        def done(result: tuple[Outcome, LayerFacts | None]) -> None:
            outcome, facts = result
            if outcome is Outcome.WRITTEN and facts is not None and not facts.bridgeable:
                log.info("layer {image_id} cannot be served to V2 clients: {problem}",
                         image_id=image_id, problem=facts.problem)

        def failed(failure: Failure) -> None:
            if failure.check(StorageUnavailable, KeyNotFound):
                # The storage failed or the layer went meanwhile: the bridge command (or a
                # V2 pull) computes them later.
                log.warn("describing the layer of {image_id} failed: {why}",
                         image_id=image_id, why=failure.getErrorMessage())
            else:
                log.failure("describing the layer of {image_id} failed", failure,
                            image_id=image_id)

        defer.ensureDeferred(fill_layer_facts(
            self._storage, self._reactor, image_id, threading.Event())).addCallbacks(
            done, failed)

    # R8
    async def put_json(
        self, image_id: str, body: bytes, token: Token | None, authorization: str | None
    ) -> None:
        """
        R8: store the image json and its ancestry; the image is in progress until R5.

        @param token: the validated token in token mode, whose repository must list the image.
        """
        require_image_id(image_id)
        data = _parse_image_json(body)
        if "id" not in data:
            raise RegistryError(400, "Missing key `id' in JSON")
        if data["id"] != image_id:
            raise RegistryError(400, "JSON data contains invalid id")
        await self._auth.image_in_repository(token, image_id)
        parent = data.get("parent")
        if parent:
            if not (
                isinstance(parent, str)
                and is_image_id(parent)
                and await self._storage.exists(image_json_key(parent))
            ):
                raise RegistryError(400, "Image depends on a non existing parent")
            await self._auth.check_parent(authorization, parent)
        if await self._storage.exists(image_json_key(image_id)) and not await self._storage.exists(
            image_inprogress_key(image_id)
        ):
            raise RegistryError(409, "Image already exists")
        for hook in self._json_hooks:
            refusal = hook(data)
            if refusal is not None:
                raise RegistryError(400, refusal)
        ancestry = [image_id]
        if parent:
            ancestry += await self._read_ancestry(parent) or [parent]
        await self._storage.put_content(image_inprogress_key(image_id), b"true")
        await self._storage.remove(image_checksum_key(image_id))
        await self._storage.put_content(image_json_key(image_id), body)
        await self._storage.put_content(
            image_ancestry_key(image_id), json.dumps(ancestry).encode()
        )

    # R9, R10
    async def check_file_list(self, image_id: str, authorization: str | None) -> None:
        """R9 checks up to existence: the cached list or the layer must exist."""
        await self._check_listing(image_id, image_files_key, authorization)

    async def check_diff(self, image_id: str, authorization: str | None) -> None:
        """R10 checks up to existence: the cached diff or the layer must exist."""
        await self._check_listing(image_id, image_diff_key, authorization)

    async def _check_listing(
        self, image_id: str, cache_key: Callable[[str], str], authorization: str | None
    ) -> None:
        await self._require_readable(image_id)
        await self._auth.check_private(authorization, image_id)
        if not (
            await self._storage.exists(cache_key(image_id))
            or await self._storage.exists(image_layer_key(image_id))
        ):
            raise not_found()

    async def get_files(self, image_id: str) -> bytes:
        """R9's body: the cached C{_files} as stored, or the layer's file list, cached."""
        try:
            return await self._storage.get_content(image_files_key(image_id))
        except KeyNotFound:
            pass
        _, body = await self._list_and_cache(image_id)
        return body

    async def _files_of(self, image_id: str) -> list | None:
        """
        An image's file list for R10: the cached C{_files} when it reads as one, else the
        layer's, cached again; None for an image without a layer.
        """
        key = image_files_key(image_id)
        try:
            cached = await self._storage.get_content(key)
        except KeyNotFound:
            pass
        else:
            files = _read_file_list(cached)
            if files is not None:
                return files
            log.warn("unreadable {key}: listing the layer again", key=key)
        if not await self._storage.exists(image_layer_key(image_id)):
            return None
        files, _ = await self._list_and_cache(image_id)
        return files

    async def _list_and_cache(self, image_id: str) -> tuple[list, bytes]:
        """The layer's file list, stored as C{_files}; the list and its stored form."""
        files = await self._file_list(image_id)
        body = json.dumps(files).encode()
        await self._storage.put_content(image_files_key(image_id), body)
        return files, body

    async def get_diff(self, image_id: str) -> bytes:
        """R10's body: the cached C{_diff}, or the diff against the ancestors, cached."""
        try:
            return await self._storage.get_content(image_diff_key(image_id))
        except KeyNotFound:
            pass
        own = await self._files_of(image_id)
        if own is None:
            raise not_found()
        # An image without a readable ancestry is diffed as a base image.
        ancestry = await self._read_ancestry(image_id) or [image_id]
        ancestors = [
            await self._files_of(ancestor) if is_image_id(ancestor) else None
            for ancestor in ancestry[1:]
        ]
        result = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), layerfiles.diff, own, ancestors
        )
        body = json.dumps(result, sort_keys=True).encode()
        await self._storage.put_content(image_diff_key(image_id), body)
        return body

    async def _file_list(self, image_id: str) -> list:
        """Parse the layer in a thread; a non-tar layer is the contract's 400."""
        layer = await self._storage.open_file(image_layer_key(image_id))

        def parse() -> list:
            with layer:
                return layerfiles.list_files(layer)

        try:
            return await threads.deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), parse
            )
        except LayerFormatError:
            raise RegistryError(400, "Layer format not supported") from None


def _read_file_list(stored: bytes) -> list | None:
    """A cached C{_files}, when it is a list of R9 entries (a name and seven fields)."""
    try:
        files = parse_json(stored)
    except ValueError:
        return None
    if isinstance(files, list) and all(
        isinstance(entry, list) and len(entry) == 8 and isinstance(entry[0], str)
        for entry in files
    ):
        return files
    return None


def _parse_image_json(body: bytes) -> dict:
    """R8 step 3: a non-empty JSON object in strict UTF-8."""
    try:
        data = parse_json(body)
    except ValueError:
        raise RegistryError(400, "Invalid JSON") from None
    if not isinstance(data, dict) or not data:
        raise RegistryError(400, "Invalid JSON")
    return data
