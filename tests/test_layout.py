"""Storage keys and name rules of the 0.9.1 layout (docs/storage.md, docs/api.md "Names")."""

from __future__ import annotations

import uuid

import pytest

from twistreg import layout
from twistreg.errors import RegistryError
from twistreg.layout import is_image_id, parse_repository, quote


@pytest.mark.parametrize(
    ("name", "key", "directory"),
    [
        ("ubuntu", "library/ubuntu", "repositories/library/ubuntu"),
        ("foo/bar", "foo/bar", "repositories/foo/bar"),
        ("a/b/c", "a/b%2Fc", "repositories/a/b%252Fc"),
        ("foo/ab%$_-test", "foo/ab%25%24_-test", "repositories/foo/ab%2525%2524_-test"),
        ("foo/my repo", "foo/my+repo", "repositories/foo/my%2Brepo"),
        ("foo/a~b", "foo/a%7Eb", "repositories/foo/a%257Eb"),
        ("Foo/BAR", "Foo/BAR", "repositories/Foo/BAR"),
        ("foo/bar/", "foo/bar", "repositories/foo/bar"),
        ("foo/bär", "foo/b%C3%A4r", "repositories/foo/b%25C3%25A4r"),
    ],
)
def test_repository_keys(name, key, directory):
    repository = parse_repository(name)
    assert (repository.key, repository.directory) == (key, directory)


@pytest.mark.parametrize(
    ("tag", "tag_file", "metadata_file"),
    [
        ("latest", "tag_latest", "taglatest_json"),
        ("1.0.0-rc1", "tag_1.0.0-rc1", "tag1.0.0-rc1_json"),
        ("_under", "tag__under", "tag_under_json"),
        ("$weird", "tag_%24weird", "tag%24weird_json"),
        ("..", "tag_%252E%252E", "tag%252E%252E_json"),
    ],
)
def test_tag_keys(tag, tag_file, metadata_file):
    """§7.2's tag table; the entry name as listed decodes back to the tag."""
    repository = parse_repository("foo/bar")
    assert layout.tag_key(repository, tag) == f"repositories/foo/bar/{tag_file}"
    assert layout.tag_json_key(repository, tag) == f"repositories/foo/bar/{metadata_file}"
    assert layout.tag_of_entry(tag_file) == (tag if tag != ".." else "%2E%2E")


@pytest.mark.parametrize(
    ("entry", "tag"),
    [("tag_%24weird", "$weird"), ("tag_a+b", "a b"), ("tag__under", "_under"),
     ("tag_under_json", "under_json"), ("taglatest_json", None), ("json", None),
     ("_private", None), ("tag", None)],
)
def test_tag_of_entry(entry, tag):
    """Listed names: a C{tag_} prefix and one level of quoting off; anything else is no tag."""
    assert layout.tag_of_entry(entry) == tag


IMAGE = "0123456789abcdef" * 4

IMAGE_KEYS = [
    (layout.image_json_key, "json"),
    (layout.image_layer_key, "layer"),
    (layout.image_ancestry_key, "ancestry"),
    (layout.image_checksum_key, "_checksum"),
    (layout.image_inprogress_key, "_inprogress"),
    (layout.image_files_key, "_files"),
    (layout.image_diff_key, "_diff"),
    (layout.image_layer_facts_key, "_layer_facts"),
]

# The files of an image directory that docker-registry 0.9.1 reads (contract §7.1).
FILES_0_9_1_READS = {"json", "layer", "ancestry", "_checksum", "_inprogress", "_files", "_diff"}


def test_layer_facts_are_no_file_0_9_1_reads():
    """A tree holding the bridge's facts is still served by 0.9.1."""
    name = layout.image_layer_facts_key(IMAGE).rsplit("/", 1)[1]
    assert name not in FILES_0_9_1_READS


@pytest.mark.parametrize(("builder", "name"), IMAGE_KEYS)
def test_image_keys(builder, name):
    """§7.1's image files."""
    assert builder(IMAGE) == f"images/{IMAGE}/{name}"
    assert builder("a" * 16) == f"images/{'a' * 16}/{name}"


@pytest.mark.parametrize(("builder", "name"), IMAGE_KEYS)
def test_image_keys_quote_what_is_not_an_id(builder, name):
    """R13 looks up any string a client sends: it stays inside C{images/}, one level deep."""
    assert builder("../../etc") == f"images/..%2F..%2Fetc/{name}"
    assert builder("..") == f"images/%252E%252E/{name}"
    assert builder("\ud800") == f"images/%ED%A0%80/{name}"


@pytest.mark.parametrize(
    ("name", "directory"),
    [("ubuntu", "repositories/library/ubuntu"), ("a/b/c", "repositories/a/b%252Fc"),
     ("foo/ab%$_-test", "repositories/foo/ab%2525%2524_-test")],
)
def test_repository_files(name, directory):
    """§7.1's repository files, in the §7.2 directories."""
    repository = parse_repository(name)
    assert layout.repository_json_key(repository) == f"{directory}/json"
    assert layout.index_images_key(repository) == f"{directory}/_index_images"
    assert layout.private_flag_key(repository) == f"{directory}/_private"
    assert layout.repository_entry_key(repository, "tag_x") == f"{directory}/tag_x"
    assert layout.images_list_key(repository.key) == f"{directory}/_images_list"
    assert layout.private_flag_key_from_key(repository.key) == f"{directory}/_private"


@pytest.mark.parametrize(
    ("key", "marker"),
    [("foo/bar", "repositories/foo/bar/_private"),
     ("busybox", "repositories/library/busybox/_private"),
     ("foo/a%2Fb", "repositories/foo/a%252Fb/_private"),
     ("foo/a b", "repositories/foo/a+b/_private"),
     ("../..", "repositories/%252E%252E/%252E%252E/_private"),
     ("foo/bar/../x", "repositories/foo/bar%2F..%2Fx/_private")],
)
def test_keys_from_a_token(key, marker):
    """§5.4: a token's repository is a key, split on its first C{/}, each part quoted once."""
    assert layout.private_flag_key_from_key(key) == marker
    assert layout.images_list_key(key) == marker.replace("_private", "_images_list")


def test_quote_dots_never_form_path_steps():
    assert quote(".") == "%252E"
    assert quote("..") == "%252E%252E"
    assert quote("a/../b") == "a%2F..%2Fb"


@pytest.mark.parametrize(
    "name",
    ["foo//bar", "/foo", "./bar", "foo/..", "foo/../bar", "..", "foo/b\x00r", "foo/b\x7fr",
     "foo/b\ud800r", "\udfff/bar",
     "foo/" + "x" * 256, "x" * 256, "foo/" + "%" * 90],
)
def test_invalid_repository_names(name):
    with pytest.raises(RegistryError) as raised:
        parse_repository(name)
    assert (raised.value.status, raised.value.message) == (400, "Invalid repository name")


def test_accepted_names_0_9_1_accepted():
    for name in ("ab%$_-test", "a/b/c", "UPPER/case", "foo/with space", "foo/" + "x" * 80):
        parse_repository(name)


@pytest.mark.parametrize(
    ("image_id", "valid"),
    [("a" * 16, True), ("0123456789abcdef" * 4, True), ("A" * 16, False), ("a" * 17, False),
     ("a" * 63, False), ("g" * 16, False), ("", False), ("a" * 16 + "\n", False),
     (["a" * 16], False), (None, False), (16, False)],
)
def test_image_ids(image_id, valid):
    assert is_image_id(image_id) is valid


@pytest.mark.parametrize(
    ("key", "valid"),
    [("foo/bar", True), ("busybox", True), ("a/b%2Fc", True), ("a//b", True), ("/", False),
     ("foo/", False), ("/bar", False), ("", False)],
)
def test_repository_keys_from_clients(key, valid):
    """A key with an empty part names no directory: its builders would make an empty step."""
    assert layout.is_repository_key(key) is valid
    if valid:
        assert "//" not in layout.private_flag_key_from_key(key)


def test_v2_keys_are_the_go_registrys():
    from twistreg.layout import (
        blob_data_key,
        layer_link_key,
        link_content,
        referrer_key,
        revision_link_key,
        upload_key,
        v2_tag_current_key,
        v2_tag_index_key,
    )
    from twistreg.oci.names import parse_digest

    digest = parse_digest("sha256:" + "ab" * 32)
    other = parse_digest("sha256:" + "cd" * 32)
    root = "docker/registry/v2"
    assert blob_data_key(digest) == f"{root}/blobs/sha256/ab/{'ab' * 32}/data"
    assert layer_link_key("a/b-c", digest) == (
        f"{root}/repositories/a/b-c/_layers/sha256/{'ab' * 32}/link")
    assert revision_link_key("a", digest) == (
        f"{root}/repositories/a/_manifests/revisions/sha256/{'ab' * 32}/link")
    assert v2_tag_current_key("a", "v1.0") == (
        f"{root}/repositories/a/_manifests/tags/v1.0/current/link")
    assert v2_tag_index_key("a", "latest", digest) == (
        f"{root}/repositories/a/_manifests/tags/latest/index/sha256/{'ab' * 32}/link")
    assert link_content(digest) == b"sha256:" + b"ab" * 32
    assert referrer_key("a/b", digest, other) == (
        f"twistreg/v2/referrers/a/b/_subjects/sha256/{'ab' * 32}/sha256-{'cd' * 32}")
    assert upload_key("0f8fad5b-d9cb-469f-a165-70867728950e") == (
        "twistreg/v2/uploads/0f8fad5b-d9cb-469f-a165-70867728950e")


def test_v2_repository_entries():
    """
    The entries that make a directory a repository are the directories the link builders
    write into; every other name starting with C{_} is the Go registry's too, never a name.
    """
    from twistreg.layout import (
        V2_LAYERS,
        V2_MANIFESTS,
        is_v2_name_component,
        layer_link_key,
        revision_link_key,
        v2_repository_key,
        v2_tags_key,
    )
    from twistreg.oci.names import parse_digest

    digest = parse_digest("sha256:" + "ab" * 32)
    assert (V2_LAYERS, V2_MANIFESTS) == ("_layers", "_manifests")
    assert layer_link_key("a", digest).startswith(f"{v2_repository_key('a')}/{V2_LAYERS}/")
    assert revision_link_key("a", digest).startswith(f"{v2_repository_key('a')}/{V2_MANIFESTS}/")
    assert v2_tags_key("a").startswith(f"{v2_repository_key('a')}/{V2_MANIFESTS}/")
    assert [entry for entry in ("_layers", "_uploads", "_x", "a", "b_c", "0")
            if is_v2_name_component(entry)] == ["a", "b_c", "0"]


def test_referrer_entries():
    """A referrer's entry names its digest; other names in the directory name none."""
    from twistreg.layout import referrer_key, referrer_of_entry, referrers_key
    from twistreg.oci.names import parse_digest

    subject = parse_digest("sha256:" + "ab" * 32)
    referrer = parse_digest("sha512:" + "cd" * 64)
    key = referrer_key("a/b", subject, referrer)
    directory, _, entry = key.rpartition("/")
    assert directory == referrers_key("a/b", subject)
    assert referrer_of_entry(entry) == str(referrer)
    for other in ("sha256", "-abc", "sha256-", "link"):
        assert referrer_of_entry(other) is None, other


def test_upload_session_keys():
    from twistreg.layout import (
        is_upload_id,
        upload_chunk_key,
        upload_chunk_name,
        upload_chunk_started,
        upload_chunks_key,
        upload_state_key,
    )

    upload_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert is_upload_id(upload_id)
    assert all(is_upload_id(str(uuid.uuid4())) for _ in range(100))
    session = f"twistreg/v2/uploads/{upload_id}"
    assert upload_state_key(upload_id) == f"{session}/state"
    name = upload_chunk_name(1700000000.1234, "ab" * 16)
    assert name == f"1700000000123-{'ab' * 16}"
    assert upload_chunk_started(name) == 1700000000.123
    assert upload_chunk_key(upload_id, name) == f"{session}/chunks/{name}"
    assert upload_chunk_key(upload_id, name).startswith(upload_chunks_key(upload_id) + "/")
    for other in (".tmp-1-ab-x", "state", "1-ab", f"-{'ab' * 16}", f"1-{'AB' * 16}"):
        assert upload_chunk_started(other) is None, other
        with pytest.raises(ValueError):
            upload_chunk_key(upload_id, other)
    with pytest.raises(ValueError):
        upload_chunk_name(1.0, "../x")


@pytest.mark.parametrize("text", [
    "../x", "", "0f8fad5b-d9cb-469f-a165-70867728950e/..", "0F8FAD5B-D9CB-469F-A165-70867728950E",
    "0f8fad5bd9cb469fa16570867728950e", "0f8fad5b-d9cb-169f-a165-70867728950e",
    "0f8fad5b-d9cb-469f-a165-70867728950e\n", "{0f8fad5b-d9cb-469f-a165-70867728950e}",
])
def test_only_registry_made_upload_ids_make_keys(text):
    """What uuid.UUID() would accept but is not the canonical text is refused too."""
    from twistreg.layout import is_upload_id, upload_chunks_key, upload_state_key

    assert not is_upload_id(text)
    for builder in (upload_state_key, upload_chunks_key):
        with pytest.raises(ValueError):
            builder(text)


def test_the_bridge_keys_are_twistregs_own():
    from twistreg.layout import bridged_blob_key, bridged_manifest_key
    from twistreg.oci.names import parse_digest

    digest = parse_digest("sha256:" + "ef" * 32)
    assert bridged_blob_key(digest) == f"twistreg/v2/bridge/blobs/sha256/{'ef' * 32}"
    assert bridged_manifest_key("a" * 64) == f"twistreg/v2/bridge/images/{'a' * 64}"


def test_the_directories_garbage_collection_walks_hold_the_keys():
    from twistreg import layout
    from twistreg.oci.names import parse_digest

    digest = parse_digest("sha256:" + "ef" * 32)
    assert layout.blob_data_key(digest) == layout.blob_key(digest) + "/data"
    assert layout.blob_key(digest).startswith(f"{layout.V2_BLOBS}/sha256/ef/")
    assert layout.layer_link_key("a/b", digest) == (
        f"{layout.layer_links_key('a/b', 'sha256')}/{digest.hex}/link")
    assert layout.revision_link_key("a/b", digest) == (
        f"{layout.revisions_key('a/b', 'sha256')}/{digest.hex}/link")
    assert layout.bridged_blob_key(digest).startswith(layout.BRIDGED_BLOBS + "/sha256/")
    assert layout.bridged_manifest_key("a" * 64) == f"{layout.BRIDGED_MANIFESTS}/{'a' * 64}"
    assert layout.bridged_image_key("a" * 64).startswith(
        layout.bridged_image_directory("a" * 64) + "/")
