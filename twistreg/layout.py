# -*- test-case-name: tests.test_layout -*-
"""
Storage keys of the docker-registry 0.9.1 layout and the name rules that guard them, and the
keys of the V2 tree (the Go distribution registry's layout) with twistreg's own beside it.

This is the only module that knows key names, so that a tree written by 0.9.1 is read
unchanged and the reverse.  Every name that reaches a key has been validated or quoted here:
nothing can address a path outside the storage root.
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import unquote_plus

import attrs

from twistreg.errors import RegistryError

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_UNQUOTED = re.compile(r"[A-Za-z0-9_.\-]*")
_IMAGE_ID = re.compile(r"[a-f0-9]{16}|[a-f0-9]{64}")
# Control characters, and lone surrogates, which have no UTF-8 and so no name on disk.
_UNNAMEABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_MAX_NAME_BYTES = 255

#: The directory holding one directory per image.
IMAGES = "images"

#: The directory holding one directory per namespace, each holding one per repository.
REPOSITORIES = "repositories"


def quote(text: str) -> str:
    """
    Q of the contract: Python 2's C{quote_plus} with no safe characters.

    Python 3's C{quote_plus} keeps C{~}; 0.9.1 wrote C{%7E}, so this is written out.
    C{.} and C{..} become C{%252E}... so that no quoted name is a path step.  A lone
    surrogate (a JSON C{"\\ud800"}) is quoted as the three bytes it would take, so that
    every string has a name, one that no stored key has.
    """
    if _UNQUOTED.fullmatch(text) is not None and text not in (".", ".."):
        return text  # image ids and most names: nothing to quote (the common case)
    if text in (".", ".."):
        text = text.replace(".", "%2E")
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        if byte in _SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def is_image_id(image_id: object) -> bool:
    """Image ids are strings of 16 or 64 lower-case hex digits."""
    return isinstance(image_id, str) and _IMAGE_ID.fullmatch(image_id) is not None


def require_image_id(image_id: str) -> None:
    """Raise the contract's 404 for a malformed image id."""
    if not is_image_id(image_id):
        raise RegistryError(404, "Invalid image ID")


# Image keys (§7.1).  The id is quoted, which changes nothing in a valid id and keeps any
# other string (R13's value) inside its own directory.


def _image_file(image_id: str, name: str) -> str:
    return f"{IMAGES}/{quote(image_id)}/{name}"


def image_json_key(image_id: str) -> str:
    """C{images/<id>/json}: the image JSON as received; the image exists when it does."""
    return _image_file(image_id, "json")


def image_layer_key(image_id: str) -> str:
    """C{images/<id>/layer}: the layer bytes as received."""
    return _image_file(image_id, "layer")


def image_ancestry_key(image_id: str) -> str:
    """C{images/<id>/ancestry}: the JSON list of the image's id and its ancestors' ids."""
    return _image_file(image_id, "ancestry")


def image_checksum_key(image_id: str) -> str:
    """C{images/<id>/_checksum}: the payload checksum of the last layer upload."""
    return _image_file(image_id, "_checksum")


def image_inprogress_key(image_id: str) -> str:
    """C{images/<id>/_inprogress}: present from R8 until R5 succeeds."""
    return _image_file(image_id, "_inprogress")


def image_files_key(image_id: str) -> str:
    """C{images/<id>/_files}: R9's file list, cached."""
    return _image_file(image_id, "_files")


def image_diff_key(image_id: str) -> str:
    """C{images/<id>/_diff}: R10's diff, cached."""
    return _image_file(image_id, "_diff")


def image_layer_facts_key(image_id: str) -> str:
    """
    C{images/<id>/_layer_facts}: what the V1 ⇄ V2 bridge knows of the layer (its V2 digest,
    diff id, size, media type, emptiness), as JSON. 0.9.1 never reads it, so it still serves
    a tree holding it.
    """
    return _image_file(image_id, "_layer_facts")


def is_repository_key(repository_key: str) -> bool:
    """
    Whether a repository key a client gives (a token's C{repository}) names a directory:
    C{foo/}, C{/bar} or C{/} have an empty part, which no repository has (§3.2), and which
    would make an empty step in a key.
    """
    return "" not in repository_key.split("/", 1)


def _directory_of_key(repository_key: str) -> str:
    """
    The directory of the repository a key names (§5.4): split on the first C{/}, one
    component meaning C{library}, each part quoted once more.
    """
    namespace, sep, rest = repository_key.partition("/")
    if not sep:
        namespace, rest = "library", namespace
    return f"{REPOSITORIES}/{quote(namespace)}/{quote(rest)}"


@attrs.frozen
class Repository:
    """A validated repository name: C{namespace} and the (unquoted) C{name} within it."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        """The repository key: what tokens name and search lists."""
        return f"{self.namespace}/{quote(self.name)}"

    @property
    def directory(self) -> str:
        """The repository's storage directory (the name part is quoted twice)."""
        return _directory_of_key(self.key)


# Repository keys (§7.1).


_TAG_PREFIX = "tag_"


def tag_key(repository: Repository, tag: str) -> str:
    """C{tag_<Q(tag)>}: the image id the tag points at."""
    return f"{repository.directory}/{_TAG_PREFIX}{quote(tag)}"


def tag_json_key(repository: Repository, tag: str) -> str:
    """C{tag<Q(tag)>_json}: the tag's metadata; 0.9.1's spelling, without a C{_} after C{tag}."""
    return f"{repository.directory}/tag{quote(tag)}_json"


def tag_of_entry(entry: str) -> str | None:
    """
    The tag a file listed in a repository directory may hold, decoded (C{tag_%24x} → C{$x});
    None for files whose name is not a tag file's.  0.9.1's C{tag_<x>_json} metadata names
    pass too: only their content tells them apart.
    """
    if not entry.startswith(_TAG_PREFIX):
        return None
    return unquote_plus(entry[len(_TAG_PREFIX):])


def repository_entry_key(repository: Repository, entry: str) -> str:
    """The key of a file listed in the repository directory, by its name as listed."""
    return f"{repository.directory}/{entry}"


def repository_json_key(repository: Repository) -> str:
    """C{json}: a copy of the metadata of the last C{latest} tag PUT (R16)."""
    return f"{repository.directory}/json"


def index_images_key(repository: Repository) -> str:
    """C{_index_images}: the image list of R22, returned by R23."""
    return f"{repository.directory}/_index_images"


def private_flag_key(repository: Repository) -> str:
    """C{_private}: the empty marker of a private repository (R18, R19)."""
    return private_flag_key_from_key(repository.key)


def private_flag_key_from_key(repository_key: str) -> str:
    """
    The C{_private} marker of the repository a token's C{repository} pair names (§5.4): the
    value is a repository key, taken as it is.
    """
    return f"{_directory_of_key(repository_key)}/_private"


def images_list_key(repository_key: str) -> str:
    """
    C{_images_list}: the ids the index listed for the repository a token names (§5.2), by
    its repository key as the token gives it.
    """
    return f"{_directory_of_key(repository_key)}/_images_list"


# The small keys a cache may hold (docs/storage.md, "Redis caches"): read on every pull and
# written whole.  Layers and the R9/R10 caches are large; C{_images_list} is only read by the
# push that the index listed it for.
_SMALL_IMAGE_FILES = frozenset({"json", "ancestry", "_checksum", "_inprogress"})
_SMALL_REPOSITORY_FILES = frozenset({"json", "_index_images", "_private"})
# Small keys are C{images/<id>/<file>} and C{repositories/<namespace>/<name>/<file>}.
_SMALL_KEY_DEPTH = {IMAGES: 3, REPOSITORIES: 4}


def is_small_key(key: str) -> bool:
    """
    Whether C{key} is an image's json, ancestry, C{_checksum} or C{_inprogress} marker, or a
    repository's tag file
    (C{tag_*}), json, C{_index_images} or C{_private} marker: what a cache in front of
    storage keeps.
    """
    parts = key.split("/")
    if len(parts) != _SMALL_KEY_DEPTH.get(parts[0]):
        return False
    name = parts[-1]
    if parts[0] == IMAGES:
        return name in _SMALL_IMAGE_FILES
    return name in _SMALL_REPOSITORY_FILES or name.startswith(_TAG_PREFIX)


def is_layer_key(key: str) -> bool:
    """Whether C{key} is an image's layer (L{image_layer_key}), whose size a cache may keep."""
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == IMAGES and parts[2] == "layer"


def may_hold_small_keys(directory: str) -> bool:
    """Whether small keys (L{is_small_key}) may lie below C{directory}, at any depth."""
    parts = directory.split("/")
    depth = _SMALL_KEY_DEPTH.get(parts[0])
    return depth is not None and len(parts) < depth


def key_of_directory(namespace_directory: str, name_directory: str) -> str:
    """
    The repository key of C{repositories/<namespace_directory>/<name_directory>} as listed
    on disk: one level of quoting comes off each part (C{foo}, C{ab%2525%2524_-test} →
    C{foo/ab%25%24_-test}), the inverse of L{Repository.directory}.
    """
    return f"{unquote_plus(namespace_directory)}/{unquote_plus(name_directory)}"


def parse_repository(text: str) -> Repository:
    """
    Split and validate a repository name from the URL.

    @raise RegistryError: 400 C{Invalid repository name} for an empty, C{.}, C{..} or
        over-long component, or a control character or lone surrogate anywhere.
    """
    text = text.rstrip("/")
    namespace, sep, name = text.partition("/")
    if not sep:
        namespace, name = "library", namespace
    components = [namespace, *name.split("/")]
    invalid = (
        _UNNAMEABLE.search(text) is not None
        or any(c in ("", ".", "..") for c in components)
        or any(len(c.encode("utf-8")) > _MAX_NAME_BYTES for c in components)
    )
    repository = Repository(namespace, name)
    if not invalid:
        on_disk = repository.directory.split("/")[1:]
        invalid = any(len(part) > _MAX_NAME_BYTES for part in on_disk)
    if invalid:
        raise RegistryError(400, "Invalid repository name")
    return repository



# -- V2: the Go distribution registry's tree, and twistreg's own beside it ------------------------
#
# Names and digests reaching these builders were checked by twistreg.oci.names (a name is
# lowercase components joined by "/", none starting with "_" or "."; a digest's parts are a
# known algorithm and its hex), so none can step out of its directory.

#: The root of the Go registry's tree (distribution 2.8, any storage driver).
V2_ROOT = "docker/registry/v2"
#: The directory holding one directory per V2 repository (names may nest).
V2_REPOSITORIES = f"{V2_ROOT}/repositories"
#: What twistreg keeps beside the Go tree: upload sessions and the referrers index. The Go
#: registry never reads it; it can be removed when the registry is stopped.
TWISTREG_V2 = "twistreg/v2"
#: The directory holding one directory per upload session.
V2_UPLOADS = f"{TWISTREG_V2}/uploads"


#: The entries of a V2 repository's directory that make it one: its blobs' links and its
#: manifests (revisions and tags).
V2_LAYERS = "_layers"
V2_MANIFESTS = "_manifests"


def is_v2_name_component(entry: str) -> bool:
    """
    Whether an entry of a directory under L{V2_REPOSITORIES} can be part of a repository's
    name: the Go registry keeps its own entries (C{_layers}, C{_manifests}, C{_uploads}) there
    and reserves every name starting with C{_} for them.
    """
    return not entry.startswith("_")


class DigestLike(Protocol):
    algorithm: str
    hex: str


def blob_data_key(digest: DigestLike) -> str:
    """C{blobs/<algorithm>/<first two hex digits>/<hex>/data}: a blob's or manifest's bytes."""
    return f"{V2_ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def v2_repository_key(name: str) -> str:
    """The directory of the V2 repository C{name}."""
    return f"{V2_REPOSITORIES}/{name}"


def layer_link_key(name: str, digest: DigestLike) -> str:
    """The link that makes a blob part of repository C{name} (its layers and configs)."""
    return f"{V2_REPOSITORIES}/{name}/{V2_LAYERS}/{digest.algorithm}/{digest.hex}/link"


def revision_link_key(name: str, digest: DigestLike) -> str:
    """The link that makes a manifest part of repository C{name}."""
    return (f"{V2_REPOSITORIES}/{name}/{V2_MANIFESTS}/revisions/"
            f"{digest.algorithm}/{digest.hex}/link")


def v2_tags_key(name: str) -> str:
    """The directory holding one directory per tag of repository C{name}."""
    return f"{V2_REPOSITORIES}/{name}/{V2_MANIFESTS}/tags"


def v2_tag_key(name: str, tag: str) -> str:
    """The directory of one tag: its current link and its index of every manifest it named."""
    return f"{v2_tags_key(name)}/{tag}"


def v2_tag_current_key(name: str, tag: str) -> str:
    """The link holding the digest of the manifest C{tag} names now."""
    return f"{v2_tag_key(name, tag)}/current/link"


def v2_tag_index_key(name: str, tag: str, digest: DigestLike) -> str:
    """The link recording that C{tag} named the manifest C{digest} at some time."""
    return f"{v2_tag_key(name, tag)}/index/{digest.algorithm}/{digest.hex}/link"


def link_content(digest: DigestLike) -> bytes:
    """What a link file holds: the digest as text, C{<algorithm>:<hex>}, no newline."""
    return f"{digest.algorithm}:{digest.hex}".encode("ascii")


def referrers_key(name: str, subject: DigestLike) -> str:
    """The directory of the manifests of repository C{name} whose C{subject} is C{subject}."""
    return (f"{TWISTREG_V2}/referrers/{name}/_subjects/"
            f"{subject.algorithm}/{subject.hex}")


def referrer_key(name: str, subject: DigestLike, referrer: DigestLike) -> str:
    """One referrer of C{subject}: its descriptor, as the referrers list gives it."""
    return f"{referrers_key(name, subject)}/{referrer.algorithm}-{referrer.hex}"


def referrer_of_entry(entry: str) -> str | None:
    """
    The digest, as text (C{<algorithm>:<hex>}), that an entry listed in L{referrers_key} is
    named after, to be parsed as one: other files may be listed there (a write in flight).
    None for a name without the two parts.
    """
    algorithm, sep, encoded = entry.rpartition("-")
    if not (sep and algorithm and encoded):
        return None
    return f"{algorithm}:{encoded}"


def upload_key(upload_id: str) -> str:
    """The directory of one upload session (its id is a UUID the registry made)."""
    return f"{V2_UPLOADS}/{upload_id}"


#: An upload session's id: a version 4 UUID in its canonical text, as the registry makes it.
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: A chunk's name: when it was begun (milliseconds since the epoch), and a random part.
_CHUNK_NAME = re.compile(r"([0-9]{1,15})-[0-9a-f]{32}")


def is_upload_id(text: str) -> bool:
    """Whether a client's session id is one the registry could have made (and names a key)."""
    return _UPLOAD_ID.fullmatch(text) is not None


def _upload_directory(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_key(upload_id)


def upload_state_key(upload_id: str) -> str:
    """A session's state (JSON): its repository, start time and the chunks it holds."""
    return f"{_upload_directory(upload_id)}/state"


def upload_chunks_key(upload_id: str) -> str:
    """The directory of a session's chunks, the ones its state records and any others."""
    return f"{_upload_directory(upload_id)}/chunks"


def upload_chunk_name(started: float, token: str) -> str:
    """
    The name of a chunk begun at C{started} (seconds since the epoch): the time is in the
    name so that the chunks of a session whose state is lost still say how old they are.

    @param token: 32 lowercase hex digits that make the name unique.
    """
    name = f"{int(started * 1000)}-{token}"
    if _CHUNK_NAME.fullmatch(name) is None:
        raise ValueError(f"not a chunk name: {name!r}")
    return name


def upload_chunk_started(name: str) -> float | None:
    """When the chunk C{name} was begun; None for any other name (a write in flight)."""
    match = _CHUNK_NAME.fullmatch(name)
    return None if match is None else int(match.group(1)) / 1000


def upload_chunk_key(upload_id: str, name: str) -> str:
    """One chunk of a session (L{upload_chunk_name})."""
    if upload_chunk_started(name) is None:
        raise ValueError(f"not a chunk name: {name!r}")
    return f"{upload_chunks_key(upload_id)}/{name}"


def bridged_blob_key(digest: DigestLike) -> str:
    """
    A V1 layer served as a V2 blob: the file holds the V1 image id whose layer the blob is,
    so that the layer's bytes are never copied into the V2 tree.
    """
    return f"{TWISTREG_V2}/bridge/blobs/{digest.algorithm}/{digest.hex}"


def bridged_manifest_key(image_id: str) -> str:
    """The digest of the V2 manifest made for a V1 image (its top layer's image id)."""
    return f"{TWISTREG_V2}/bridge/images/{image_id}"


#: What twistreg keeps beside the 0.9.1 tree: the V1 view of V2 images. 0.9.1 never reads it.
TWISTREG_V1 = "twistreg/v1"
#: The directory holding one directory per V1 image made for a layer of a V2 image.
BRIDGED_IMAGES = f"{TWISTREG_V1}/bridge/images"


def bridged_image_key(image_id: str) -> str:
    """
    A V1 image made for a layer of a V2 image: its json, ancestry and layer blob, and the
    V2 repository and manifest it was made from.
    """
    return f"{BRIDGED_IMAGES}/{image_id}/image"


def bridged_checksum_key(image_id: str) -> str:
    """The payload checksum of such an image, computed when a V1 client first asks for it."""
    return f"{BRIDGED_IMAGES}/{image_id}/_checksum"


# -- What garbage collection walks: the directories above the keys built here ------------------

#: The directory of every blob's and manifest's bytes, one directory per algorithm.
V2_BLOBS = f"{V2_ROOT}/blobs"
#: The directory of the files naming the V1 image whose layer a blob is, one per algorithm.
BRIDGED_BLOBS = f"{TWISTREG_V2}/bridge/blobs"
#: The directory of the files naming the manifest made for a V1 image, one per image.
BRIDGED_MANIFESTS = f"{TWISTREG_V2}/bridge/images"


def blob_key(digest: DigestLike) -> str:
    """The directory of a blob: its C{data} (L{blob_data_key}) and nothing else."""
    return f"{V2_BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def layer_links_key(name: str, algorithm: str) -> str:
    """The directory of the blob links of repository C{name}, one directory per hex digest."""
    return f"{V2_REPOSITORIES}/{name}/{V2_LAYERS}/{algorithm}"


def revisions_key(name: str, algorithm: str) -> str:
    """The directory of the manifests of repository C{name}, one directory per hex digest."""
    return f"{V2_REPOSITORIES}/{name}/{V2_MANIFESTS}/revisions/{algorithm}"


def bridged_image_directory(image_id: str) -> str:
    """Everything kept of one V1 image made for a V2 image (L{bridged_image_key})."""
    return f"{BRIDGED_IMAGES}/{image_id}"


#: What C{/_health} writes and removes to prove the storage takes writes: beside twistreg's
#: own trees, read by nothing.
HEALTH_PROBE_KEY = "twistreg/health-check"
