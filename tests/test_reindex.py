"""C{python -m twistreg reindex} refuses a storage path that is not there (it would create it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from twisted.internet.defer import ensureDeferred

from tests.server import ROOT
from tests.threads import InlineThreadsReactor
from twistreg.oci.uploads import Uploads
from twistreg.storage.local import LocalStorage

pytestmark = pytest.mark.integration


def test_a_missing_storage_path_is_one_line_and_not_created(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("dev:\n  standalone: true\n  search_backend: sqlite\n")
    missing = tmp_path / "typo" / "storage"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    env.pop("SETTINGS_FLAVOR", None)
    result = subprocess.run(
        [sys.executable, "-m", "twistreg", "reindex", "--config", str(config),
         "--storage-path", str(missing)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"twistreg reindex: storage path {missing} does not exist\n")
    assert not (tmp_path / "typo").exists()


def test_purge_uploads_on_local_storage(tmp_path):
    """Temporary files of a dead process go; those of a live one stay."""
    storage = tmp_path / "storage"
    image_dir = storage / "images" / "a"
    image_dir.mkdir(parents=True)
    (image_dir / ".tmp-999999999-abc-layer").write_bytes(b"half")
    (image_dir / f".tmp-{os.getpid()}-abc-layer").write_bytes(b"in flight")
    assert purge_uploads(tmp_path, storage) == "removed 1 stale upload from local storage\n"
    assert os.listdir(image_dir) == [f".tmp-{os.getpid()}-abc-layer"]


def purge_uploads(tmp_path, storage, *options: str) -> str:
    """What C{python -m twistreg purge-uploads} prints; it must succeed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "twistreg", "purge-uploads", "--storage-path", str(storage),
         *options], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_purge_uploads_removes_old_v2_sessions(tmp_path):
    """A V2 upload session older than v2_upload_max_age goes; a fresh one stays."""
    storage = tmp_path / "storage"
    storage.mkdir()
    reactor = InlineThreadsReactor()
    uploads = Uploads(LocalStorage(str(storage)), reactor)
    old = ensureDeferred(uploads.start("foo/bar")).result
    reactor.advance(time.time())
    fresh = ensureDeferred(uploads.start("foo/bar")).result
    assert json.loads(purge_uploads(tmp_path, storage, "--json")) == {
        "removed": 1, "storage": "local"}
    assert sorted(os.listdir(storage / "twistreg/v2/uploads")) == [fresh]
    assert old != fresh


def test_reindex_says_what_it_did_in_json(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("dev:\n  standalone: true\n  search_backend: sqlite\n"
                      f"  sqlalchemy_index_database: sqlite:///{tmp_path}/search.db\n")
    storage = tmp_path / "storage"
    (storage / "repositories/foo/bar").mkdir(parents=True)
    (storage / "repositories/foo/bar/tag_latest").write_text("a" * 64)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    env.pop("SETTINGS_FLAVOR", None)
    result = subprocess.run(
        [sys.executable, "-m", "twistreg", "reindex", "--config", str(config),
         "--storage-path", str(storage), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["repositories"] == 1
