"""
The htpasswd file (twistreg/htpasswd.py) and the C{auth} and C{readonly} keys that use it
(twistreg/config.py): bcrypt entries as C{htpasswd -B} writes them, one clear line for a file
that cannot be used.
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from twistreg.config import ConfigError, load_settings
from twistreg.htpasswd import HtpasswdError, read_htpasswd


def htpasswd_entry(user: str, password: str, rounds: int = 4) -> str:
    """An entry as C{htpasswd -B} writes it: bcrypt with the C{$2y$} prefix."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return f"{user}:$2y${hashed[4:]}"


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(htpasswd_entry(u, p) + "\n" for u, p in users.items()))
    return path


def load(tmp_path: Path, flavor: str):
    config = tmp_path / "config.yml"
    config.write_text("dev:\n" + flavor)
    return load_settings(str(config), environ={}, system_config_path=None)


def test_reads_bcrypt_entries(tmp_path):
    path = tmp_path / "htpasswd"
    alice, bob = htpasswd_entry("alice", "a"), htpasswd_entry("bob", "b")
    path.write_text(f"# the team\n{alice}\r\n\n{bob}")
    users = read_htpasswd(str(path))
    assert users == {"alice": alice.split(":")[1].encode(), "bob": bob.split(":")[1].encode()}
    assert users["alice"].startswith(b"$2y$04$")


@pytest.mark.parametrize("line, why", [
    ("alice", "not user:hash"),
    (":$2y$04$" + "a" * 53, "not user:hash"),
    ("alice:$apr1$abc$def",
     "the entry of 'alice' is not a bcrypt hash (write it with htpasswd -B)"),
    ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "the entry of 'alice' is not a bcrypt hash"),
    ("alice:$2y$04$short", "the entry of 'alice' is not a bcrypt hash"),
])
def test_a_bad_line_is_named(tmp_path, line, why):
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_entry("bob", "b") + "\n\n" + line + "\n")
    with pytest.raises(HtpasswdError) as caught:
        read_htpasswd(str(path))
    assert str(caught.value).startswith(f"htpasswd file {path}, line 3: {why}")
    assert "$apr1$" not in str(caught.value) and "{SHA}" not in str(caught.value)


def test_a_user_listed_twice_is_refused(tmp_path):
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "a"})
    path.write_text(path.read_text() + htpasswd_entry("alice", "other") + "\n")
    with pytest.raises(HtpasswdError, match="line 2: user 'alice' is listed twice"):
        read_htpasswd(str(path))


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(HtpasswdError) as caught:
        read_htpasswd(str(tmp_path / "nowhere"))
    assert str(caught.value) == (f"cannot read htpasswd file {tmp_path / 'nowhere'}:"
                                 " No such file or directory")


def test_the_auth_key(tmp_path):
    write_htpasswd(tmp_path / "htpasswd", {"alice": "a", "reader": "r"})
    settings = load(tmp_path, f"  auth:\n    htpasswd:\n      path: {tmp_path}/htpasswd\n"
                              "      realm: My registry\n      readers: [reader]\n")
    passwords = settings.passwords
    assert passwords is not None
    assert (passwords.path, passwords.realm) == (f"{tmp_path}/htpasswd", "My registry")
    assert passwords.readers == {"reader"} and set(passwords.users) == {"alice", "reader"}
    # The hashes stay out of any printed settings.
    assert "$2y$" not in repr(settings)
    assert load(tmp_path, "  standalone: true\n").passwords is None


def test_the_realm_defaults_and_readers_may_be_empty(tmp_path):
    write_htpasswd(tmp_path / "htpasswd", {"alice": "a"})
    settings = load(tmp_path, f"  auth:\n    htpasswd:\n      path: {tmp_path}/htpasswd\n")
    assert settings.passwords.realm == "twistreg"
    assert settings.passwords.readers == frozenset()


@pytest.mark.parametrize("auth, message", [
    ("  auth:\n    htpasswd: {}\n", "config key auth.htpasswd.path must name the htpasswd file"),
    ("  auth:\n    token: {}\n", "config key auth.token is not supported (supported: htpasswd)"),
    ("  auth: yes\n", "config key auth must be a mapping, not a bool"),
    ("  auth:\n    htpasswd: {path: HTPASSWD, realm: 'a\"b'}\n",
     "config key auth.htpasswd.realm must be printable text without quotes or backslashes"),
    ("  auth:\n    htpasswd: {path: HTPASSWD, readers: bob}\n",
     "config key auth.htpasswd.readers must be a list of user names, not 'bob'"),
    ("  auth:\n    htpasswd: {path: HTPASSWD.missing}\n", "cannot read htpasswd file"),
])
def test_bad_auth_keys_are_one_line(tmp_path, auth, message):
    write_htpasswd(tmp_path / "htpasswd", {"alice": "a"})
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, auth.replace("HTPASSWD", str(tmp_path / "htpasswd")))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_bad_entry_fails_the_load_naming_file_and_line(tmp_path):
    (tmp_path / "htpasswd").write_text("alice:secret\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"  auth:\n    htpasswd:\n      path: {tmp_path}/htpasswd\n")
    assert str(caught.value) == (f"htpasswd file {tmp_path}/htpasswd, line 1: the entry of"
                                 " 'alice' is not a bcrypt hash (write it with htpasswd -B)")


def test_readonly(tmp_path):
    assert load(tmp_path, "  readonly: true\n").readonly is True
    assert load(tmp_path, "  standalone: true\n").readonly is False
