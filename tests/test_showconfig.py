"""C{python -m twistreg config}: the effective configuration, secrets hidden, or one line."""

from __future__ import annotations

import argparse
import json
import textwrap

import bcrypt
import pytest
import yaml

from twistreg import showconfig


def run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    showconfig.add_command(parser.add_subparsers(dest="command", required=True))
    options = parser.parse_args(["config", *argv])
    try:
        options.run(options)
        status = 0
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_setting_with_secrets_hidden(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SECRET", "s3-secret-value")
    config = write(tmp_path, """\
        prod:
          storage: s3
          s3_bucket: images
          s3_access_key: AKIAEXAMPLE
          s3_secret_key: _env:SECRET
          sqlalchemy_index_database: postgresql://registry:db-password@db.example/registry
          search_backend: sqlalchemy
          cache_lru: {host: redis.example, password: redis-password}
        """)
    status, out, err = run(capsys, "--config", config, "--flavor", "prod", "--json")
    assert (status, err) == (0, "")
    shown = json.loads(out)
    assert shown["storage"] == "s3" and shown["s3"]["bucket"] == "images"
    assert shown["s3"]["secret_key"] == showconfig.HIDDEN
    assert shown["cache_lru"]["password"] == showconfig.HIDDEN
    assert shown["search_database"] == "postgresql://registry:<hidden>@db.example/registry"
    assert shown["v2"] is True and shown["server"]["port"] == 5000
    assert "raw" not in shown
    for secret in ("s3-secret-value", "db-password", "redis-password"):
        assert secret not in out


def test_password_hashes_are_hidden(tmp_path, capsys):
    users = tmp_path / "htpasswd"
    users.write_text("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode() + "\n")
    config = write(tmp_path, f"""\
        dev:
          auth: {{htpasswd: {{path: {users}, readers: [alice]}}}}
        """)
    status, out, _ = run(capsys, "--config", config)
    assert status == 0
    shown = yaml.safe_load(out)["passwords"]
    assert (shown["readers"], shown["users"]) == (["alice"], showconfig.HIDDEN)
    assert "$2b$" not in out


def test_yaml_by_default(tmp_path, capsys):
    status, out, _ = run(capsys, "--config", write(tmp_path, "dev:\n  loglevel: debug\n"))
    assert status == 0
    assert yaml.safe_load(out)["loglevel"] == "debug"


@pytest.mark.parametrize(("text", "says"), [
    ("dev:\n  v2_upload_max_age: soon\n", "v2_upload_max_age"),
    ("dev:\n  storage: gcs\n", "gcs"),
    ("dev: [\n", "config.yml"),
])
def test_a_wrong_key_is_one_line(tmp_path, capsys, text, says):
    status, out, err = run(capsys, "--config", write(tmp_path, text))
    assert (status, out) == (1, "")
    assert err.startswith("twistreg config: ") and says in err
    assert err.count("\n") == 1
