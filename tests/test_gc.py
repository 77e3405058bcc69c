"""
Garbage collection (twistreg/gc/): what no tag reaches goes once older than the grace period,
V1 and V2 and the bridge between them; what a push writes meanwhile stays. Trees are made
through the routes of a registry in memory, ages by the collector's clock and the files'
times, never by waiting.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import attrs
import pytest
from twisted.internet.task import Clock

from tests.memory import MemoryRegistry
from tests.test_bridge_facts import done
from tests.test_bridge_v1_to_v2 import ACCEPT, BASE_LAYER, EMPTY_LAYER, push_v1
from tests.test_bridge_v2_to_v1 import NAME as BRIDGED
from tests.test_bridge_v2_to_v1 import config_of, push_v2
from tests.test_v2_routes import OCI_INDEX, OCI_MANIFEST, digest_of, image_manifest, push_blob
from twistreg import layout
from twistreg.config import GCSettings
from twistreg.gc import report as kinds
from twistreg.gc.collector import Rules, collect
from twistreg.oci.names import parse_digest
from twistreg.storage.local import LocalStorage
from twistreg.walking import Pace

HOUR = 3600.0
NAME = "foo/app"
OLD, YOUNGER, YOUNGEST = "0a" * 32, "0b" * 32, "0c" * 32


@pytest.fixture
def registry(tmp_path):
    running = MemoryRegistry(tmp_path)
    yield running
    running.close()


def age(registry: MemoryRegistry, seconds: float, *under: str) -> None:
    """Make every file under these storage paths (all by default) C{seconds} old."""
    then = time.time() - seconds
    for top in under or ("",):
        for directory, _, files in os.walk(registry.storage / top):
            for name in files:
                os.utime(os.path.join(directory, name), (then, then))


class Pushes:
    """A progress that runs a push when a phase starts: between the marks and the sweeps."""

    def __init__(self, phase: str, push) -> None:
        self._phase = phase
        self._push = push

    def phase(self, name: str, total: int) -> None:
        if name == self._phase and self._push is not None:
            push, self._push = self._push, None
            push()

    def advance(self) -> None:
        pass


def run(registry: MemoryRegistry, *, dry_run: bool = False, progress=None,
        stopping: threading.Event | None = None, untagged: float = 2 * HOUR):
    """A collection now, with an hour's grace."""
    clock = Clock()
    clock.advance(time.time())
    storage = LocalStorage(str(registry.storage))
    return done(collect(storage, clock, Rules(grace=HOUR, untagged=untagged), dry_run=dry_run,
                        progress=progress, pace=Pace(clock, stopping)))


def exists(registry: MemoryRegistry, key: str) -> bool:
    return (registry.storage / key).is_file()


def push_image(registry, layer: bytes, tag: str | None = "latest", name: str = NAME,
               **extra) -> tuple[str, str, str]:
    """An image pushed over V2: its manifest's, config's and layer's digests."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "layer": len(layer)}).encode()
    manifest = image_manifest(push_blob(registry, config, name),
                              [(push_blob(registry, layer, name), len(layer))], len(config),
                              **extra)
    reference = tag or digest_of(manifest)
    answer = registry.request("PUT", f"/v2/{name}/manifests/{reference}", manifest,
                              {"Content-Type": OCI_MANIFEST})
    assert answer.status == 201, answer
    return digest_of(manifest), digest_of(config), digest_of(layer)


def pulled(registry, reference: str, name: str = NAME) -> bool:
    """Whether the manifest and every blob it names are served."""
    accept = f"{OCI_MANIFEST}, {OCI_INDEX}, {ACCEPT['Accept']}"
    answer = registry.request("GET", f"/v2/{name}/manifests/{reference}",
                              headers={"Accept": accept})
    if answer.status != 200:
        return False
    document = answer.json()
    blobs = [document["config"], *document["layers"]] if "config" in document else []
    children = [child["digest"] for child in document.get("manifests", [])]
    return (all(registry.request("GET", f"/v2/{name}/blobs/{blob['digest']}").status == 200
                for blob in blobs)
            and all(pulled(registry, child, name) for child in children))


def blob_key(digest: str) -> str:
    return layout.blob_data_key(parse_digest(digest))


# -- V2 --------------------------------------------------------------------------------------


def test_a_manifest_no_tag_reaches_goes_with_its_own_blobs(registry):
    first, config, layer = push_image(registry, b"first layer")
    age(registry, 3 * HOUR)
    second, _, new_layer = push_image(registry, b"second layer")  # latest moves on
    report = run(registry)
    assert pulled(registry, "latest")
    assert registry.request("GET", f"/v2/{NAME}/manifests/{first}").status == 404
    assert not exists(registry, blob_key(first)) and not exists(registry, blob_key(layer))
    assert exists(registry, blob_key(new_layer)) and exists(registry, blob_key(second))
    assert report.objects[kinds.MANIFESTS] == 1
    assert report.objects[kinds.BLOB_LINKS] == 2  # the old config and layer
    assert report.objects[kinds.BLOBS] == 3  # the old manifest, config and layer
    assert report.bytes[kinds.BLOBS] > len(b"first layer")
    # The tag's history named it: that is no reason to keep it, and the history forgets it.
    tag_index = layout.v2_tag_index_key(NAME, "latest", parse_digest(first))
    assert not exists(registry, tag_index)
    assert not report.interrupted and report.seconds >= 0
    # A second run finds nothing more.
    assert run(registry).total_objects == 0


def test_untagged_manifests_are_kept_for_the_untagged_period(registry):
    first, _, layer = push_image(registry, b"first layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"second layer")
    assert run(registry, untagged=4 * HOUR).total_objects == 0
    assert pulled(registry, first)
    # Never shorter than the grace period.
    age(registry, 0.5 * HOUR)
    assert run(registry, untagged=0).total_objects == 0


def test_nothing_younger_than_the_grace_period_goes(registry):
    first, _, layer = push_image(registry, b"first layer")
    push_image(registry, b"second layer")
    # An untagged manifest, and a blob uploaded with no manifest yet (a push under way).
    orphan = push_blob(registry, b"not named yet", NAME)
    report = run(registry, untagged=0)
    assert report.total_objects == 0
    assert pulled(registry, first)
    assert registry.request("GET", f"/v2/{NAME}/blobs/{orphan}").status == 200


def test_an_index_keeps_its_children_and_a_subject_its_referrers(registry):
    amd, _, amd_layer = push_image(registry, b"amd64 layer", tag=None)
    arm, _, _ = push_image(registry, b"arm64 layer", tag=None)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd, "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": arm, "size": 1}]}).encode()
    assert registry.request("PUT", f"/v2/{NAME}/manifests/multi", index,
                            {"Content-Type": OCI_INDEX}).status == 201
    signature, _, _ = push_image(registry, b"signature", tag=None,
                                 subject={"mediaType": OCI_INDEX, "digest": digest_of(index),
                                          "size": len(index)})
    lonely, _, _ = push_image(registry, b"unreached", tag=None)
    age(registry, 3 * HOUR)
    report = run(registry)
    assert pulled(registry, "multi") and pulled(registry, signature)
    assert [m["digest"] for m in registry.request(
        "GET", f"/v2/{NAME}/referrers/{digest_of(index)}").json()["manifests"]] == [signature]
    assert not pulled(registry, lonely)
    assert report.objects[kinds.MANIFESTS] == 1


def test_a_blob_another_repository_links_stays(registry):
    first, _, layer = push_image(registry, b"shared layer")
    push_image(registry, b"shared layer", name="other/app")
    age(registry, 3 * HOUR)
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/{first}").status == 202
    report = run(registry)
    assert report.objects[kinds.BLOB_LINKS] == 2  # foo/app's config and layer links
    assert report.objects[kinds.BLOBS] == 0  # the same bytes, manifest included, are other/app's
    assert registry.request("GET", f"/v2/{NAME}/blobs/{layer}").status == 404
    assert pulled(registry, "latest", "other/app")


def test_a_dry_run_lists_and_removes_nothing(registry):
    first, _, layer = push_image(registry, b"first layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"second layer")
    report = run(registry, dry_run=True)
    listed = {(entry["kind"], entry["key"]) for entry in report.listed}
    assert (kinds.MANIFESTS, layout.revision_link_key(NAME, parse_digest(first))) in listed
    assert (kinds.BLOBS, blob_key(layer)) in listed
    assert report.objects[kinds.BLOBS] == 3
    assert report.as_dict()["would_remove"] == report.listed
    assert pulled(registry, first)
    assert run(registry).objects == report.objects


# -- V1 --------------------------------------------------------------------------------------


def tag_v1(registry, tag: str, image_id: str, repository: str = "foo/bar") -> int:
    return registry.request("PUT", f"/v1/repositories/{repository}/tags/{tag}",
                            json.dumps(image_id).encode()).status


def test_v1_images_outside_every_ancestry_and_image_list_go(registry):
    push_v1(registry, OLD, BASE_LAYER)
    push_v1(registry, YOUNGER, EMPTY_LAYER, parent=OLD)
    push_v1(registry, "1a" * 32, BASE_LAYER)  # untagged, in no list
    push_v1(registry, "1b" * 32, BASE_LAYER)  # in an image list
    assert registry.request("PUT", "/v1/repositories/foo/listed/",
                            json.dumps([{"id": "1b" * 32}]).encode()).status == 200
    assert tag_v1(registry, "latest", YOUNGER) == 200
    age(registry, 3 * HOUR)
    push_v1(registry, "1c" * 32, BASE_LAYER)  # untagged but young
    report = run(registry)
    assert report.objects[kinds.V1_IMAGES] == 1
    assert report.bytes[kinds.V1_IMAGES] > len(BASE_LAYER)
    assert not (registry.storage / "images" / ("1a" * 32)).exists()
    for kept in (OLD, YOUNGER, "1b" * 32, "1c" * 32):
        assert registry.request("GET", f"/v1/images/{kept}/layer").status == 200


def test_a_v1_push_in_progress_is_left_alone_until_the_grace_period_ends(registry):
    body = json.dumps({"id": OLD}).encode()
    assert registry.request("PUT", f"/v1/images/{OLD}/json", body).status == 200
    assert run(registry).total_objects == 0
    age(registry, 3 * HOUR)
    assert run(registry).objects[kinds.V1_IMAGES] == 1  # abandoned


# -- pushes racing the collector -------------------------------------------------------------


def test_a_tag_written_between_mark_and_sweep_keeps_what_it_names(registry):
    first, config, layer = push_image(registry, b"first layer")
    push_v1(registry, OLD, BASE_LAYER)
    age(registry, 3 * HOUR)
    push_image(registry, b"second layer")

    def push():
        # Both reuse old objects nothing reached when the collector marked.
        manifest = registry.request("GET", f"/v2/{NAME}/manifests/{first}",
                                    headers={"Accept": OCI_MANIFEST}).body
        assert registry.request("PUT", f"/v2/{NAME}/manifests/again", manifest,
                                {"Content-Type": OCI_MANIFEST}).status == 201
        assert tag_v1(registry, "latest", OLD) == 200

    report = run(registry, progress=Pushes("V1 images", push))
    assert report.total_objects == 0
    assert pulled(registry, "again")
    assert registry.request("GET", f"/v1/images/{OLD}/layer").status == 200


def test_a_push_during_the_sweep_keeps_every_blob(registry):
    push_image(registry, b"old layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"newer layer")
    pushed = []

    def push():
        pushed.append(push_image(registry, b"pushed during the sweep", tag="during")[0])

    run(registry, progress=Pushes("blobs", push))
    assert pulled(registry, "during") and pulled(registry, "latest")


def test_an_interrupted_collection_says_so_and_a_rerun_finishes(registry):
    push_image(registry, b"old layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"newer layer")
    stopping = threading.Event()
    stopping.set()
    assert run(registry, stopping=stopping).interrupted
    report = run(registry)
    assert not report.interrupted and report.objects[kinds.MANIFESTS] == 1


# -- the bridge ------------------------------------------------------------------------------


def pull_v1_over_v2(registry, repository: str = "foo/bar", tag: str = "latest") -> dict:
    answer = registry.request("GET", f"/v2/{repository}/manifests/{tag}", headers=ACCEPT)
    assert answer.status == 200, answer
    return answer.json()


def test_a_v1_tag_pulled_over_v2_keeps_its_made_manifest_and_layer_files(registry):
    push_v1(registry, OLD, BASE_LAYER)
    assert tag_v1(registry, "latest", OLD) == 200
    pull_v1_over_v2(registry)
    age(registry, 3 * HOUR)
    assert run(registry).total_objects == 0
    assert pulled(registry, "latest", "foo/bar")


def test_a_v1_image_stays_while_a_v2_manifest_names_its_layer(registry):
    push_v1(registry, OLD, BASE_LAYER)
    assert tag_v1(registry, "latest", OLD) == 200
    made = pull_v1_over_v2(registry)
    layer = made["layers"][0]["digest"]
    # A V2 repository takes the bridged blob by a mount and names it in a manifest of its own.
    assert registry.request(
        "POST", f"/v2/v2/copy/blobs/uploads/?mount={layer}&from=foo/bar").status == 201
    config = push_blob(registry, b'{"os":"linux"}', "v2/copy")
    manifest = image_manifest(config, [(layer, made["layers"][0]["size"])], 14)
    assert registry.request("PUT", "/v2/v2/copy/manifests/kept", manifest,
                            {"Content-Type": OCI_MANIFEST}).status == 201
    assert registry.request("DELETE", "/v1/repositories/foo/bar/tags/latest").status == 200
    age(registry, 3 * HOUR)
    report = run(registry)
    assert report.objects[kinds.V1_IMAGES] == 0
    assert pulled(registry, "kept", "v2/copy")


def test_a_v1_image_no_tag_reaches_goes_with_what_the_bridge_made_of_it(registry):
    push_v1(registry, OLD, BASE_LAYER)
    assert tag_v1(registry, "latest", OLD) == 200
    made = pull_v1_over_v2(registry)
    layer = parse_digest(made["layers"][0]["digest"])
    assert exists(registry, layout.bridged_blob_key(layer))
    assert registry.request("DELETE", "/v1/repositories/foo/bar/tags/latest").status == 200
    age(registry, 3 * HOUR)
    report = run(registry)
    assert report.objects[kinds.V1_IMAGES] == 1
    assert report.objects[kinds.BRIDGE_RECORDS] == 2  # the blob's and the manifest's
    assert not exists(registry, layout.bridged_blob_key(layer))
    assert not exists(registry, layout.bridged_manifest_key(OLD))
    assert not list(Path(registry.storage, layout.V2_BLOBS).rglob("data"))


def test_a_v1_view_of_a_v2_image_goes_with_its_layer(registry):
    first, _, layer = push_image(registry, b"first layer")
    record = {"repository": NAME, "manifest": first, "layer": layer}
    view = registry.storage / layout.bridged_image_key(OLD)
    view.parent.mkdir(parents=True)
    view.write_text(json.dumps(record))
    (view.parent / "_checksum").write_text("x")
    age(registry, 3 * HOUR)
    assert run(registry).total_objects == 0
    push_image(registry, b"second layer")
    report = run(registry)
    assert report.objects[kinds.MANIFESTS] == 1
    assert not view.parent.exists()


def test_a_v1_image_two_v2_images_share_stays_while_one_of_them_does(registry):
    """Same base layer and history: one V1 image below both tops."""
    push_v2(registry, "one")
    other = config_of(config={"Cmd": ["/other"]})
    push_v2(registry, "two", config=other)
    tags = registry.request("GET", f"/v1/repositories/{BRIDGED}/tags").json()
    [base] = set(registry.request("GET", f"/v1/images/{tags['one']}/ancestry").json()[1:])
    assert registry.request("DELETE", f"/v2/{BRIDGED}/manifests/one").status == 202
    age(registry, 3 * HOUR)
    run(registry, untagged=HOUR)
    registry.clock.advance(60)  # what the process kept of the views
    for image_id in registry.request("GET", f"/v1/images/{tags['two']}/ancestry").json():
        assert registry.request("GET", f"/v1/images/{image_id}/json").status == 200
        assert registry.request("GET", f"/v1/images/{image_id}/layer").status == 200
    assert (registry.storage / layout.bridged_image_key(base)).exists()


# -- the report ------------------------------------------------------------------------------


def test_the_report_is_a_plain_object_and_json(registry):
    push_image(registry, b"first layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"second layer")
    report = run(registry)
    as_json = json.loads(json.dumps(report.as_dict()))
    assert as_json["objects"] == report.total_objects == 6
    assert as_json["bytes"] == report.total_bytes > 0
    assert as_json["removed"][kinds.BLOBS]["objects"] == 3
    # The second image's manifest, its config and layer links, and blobs stay.
    assert (as_json["kept"][kinds.MANIFESTS], as_json["kept"][kinds.BLOB_LINKS]) == (1, 2)
    assert "would_remove" not in as_json
    assert report.summary("local").startswith(
        "gc removed 1 manifests, 2 blob links, 3 blobs (")


# -- in the server ---------------------------------------------------------------------------


def test_the_server_collects_every_interval_unless_read_only(registry, monkeypatch):
    from twistreg.gc import schedule

    recorded: list = []
    monkeypatch.setattr(schedule, "record_gc", recorded.append)
    push_image(registry, b"first layer")
    age(registry, 3 * HOUR)
    push_image(registry, b"second layer")
    settings = registry.registry.settings
    clock = Clock()
    clock.advance(time.time())
    storage = LocalStorage(str(registry.storage))
    read_only = [True]
    collector = schedule.Collector(clock, storage, attrs.evolve(
        settings, gc=GCSettings(interval=600.0, untagged=HOUR)), lambda: read_only[0])
    collector.start()
    clock.advance(600)
    assert recorded == []  # read-only: nothing written, nothing removed
    read_only[0] = False
    clock.advance(599)
    assert recorded == []
    clock.advance(1)
    assert len(recorded) == 1 and recorded[0].objects[kinds.MANIFESTS] == 1
    collector.stop()
    clock.advance(600)
    assert len(recorded) == 1


def test_the_server_collects_nothing_without_an_interval(registry, monkeypatch):
    from twistreg.gc import schedule

    recorded: list = []
    monkeypatch.setattr(schedule, "record_gc", recorded.append)
    clock = Clock()
    collector = schedule.Collector(clock, LocalStorage(str(registry.storage)),
                                   registry.registry.settings)
    collector.start()
    clock.advance(10 * 86400)
    assert recorded == []
