"""
Checking C{Basic} credentials against htpasswd users (twistreg/registry/passwords.py): bcrypt
in the thread pool, a passed check remembered for a while under a keyed hash, and unknown
users costing a check all the same.
"""

from __future__ import annotations

import base64

import bcrypt
import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from tests.memory import MemoryReactor
from twistreg.registry import passwords as module
from twistreg.registry.passwords import VERIFIED_TTL, Passwords, basic_credentials


def hashed(password: bytes) -> bytes:
    """As C{htpasswd -B} writes it: the C{$2y$} prefix."""
    return b"$2y$" + bcrypt.hashpw(password, bcrypt.gensalt(4))[4:]


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def result(deferred_or_coroutine):
    results: list = []
    defer.ensureDeferred(deferred_or_coroutine).addBoth(results.append)
    (value,) = results
    if isinstance(value, Failure):
        value.raiseException()
    return value


@pytest.fixture
def checks(monkeypatch) -> list[bytes]:
    """Every bcrypt check made, by the hash it was made against."""
    made: list[bytes] = []
    real = module._matches

    def counted(password: bytes, against: bytes) -> bool:
        made.append(against)
        return real(password, against)

    monkeypatch.setattr(module, "_matches", counted)
    return made


@pytest.fixture
def reactor() -> MemoryReactor:
    return MemoryReactor()


USERS = {"alice": hashed(b"wonderland"), "bob": hashed(b"builder")}


def test_a_right_password_is_checked_once_a_while(reactor, checks):
    passwords = Passwords(USERS, reactor)
    header = basic(b"alice", b"wonderland")
    assert result(passwords.user(header)) == "alice"
    assert result(passwords.user(header)) == "alice"
    assert checks == [USERS["alice"]]
    reactor.advance(VERIFIED_TTL)
    assert result(passwords.user(header)) == "alice"
    assert len(checks) == 2


def test_a_wrong_password_is_checked_every_time(reactor, checks):
    passwords = Passwords(USERS, reactor)
    assert result(passwords.user(basic(b"alice", b"builder"))) is None
    assert result(passwords.user(basic(b"alice", b"builder"))) is None
    assert checks == [USERS["alice"]] * 2


def test_an_unknown_user_costs_a_check_too(reactor, checks):
    passwords = Passwords(USERS, reactor)
    assert result(passwords.user(basic(b"mallory", b"wonderland"))) is None
    assert len(checks) == 1
    # Even with a password that matches the entry checked instead.
    assert result(passwords.user(basic(b"mallory", b"wonderland"))) is None


def test_no_users_no_one_passes(reactor, checks):
    assert result(Passwords({}, reactor).user(basic(b"alice", b"wonderland"))) is None
    assert checks == []


def test_a_remembered_password_does_not_open_another_user(reactor):
    """The name and the password are remembered apart: C{ab}/C{c} is not C{a}/C{bc}."""
    passwords = Passwords({"a": hashed(b"bc")}, reactor)
    assert result(passwords.user(basic(b"a", b"bc"))) == "a"
    assert result(passwords.user(basic(b"ab", b"c"))) is None


def test_the_memory_holds_no_password(reactor):
    passwords = Passwords(USERS, reactor)
    result(passwords.user(basic(b"alice", b"wonderland")))
    assert b"wonderland" not in repr(vars(passwords._verified)).encode()
    assert "wonderland" not in repr(vars(passwords))


@pytest.mark.parametrize("header", [
    None, "", "Basic", "Basic !!!!", "Bearer abc", "Token signature=x",
    "Basic " + base64.b64encode(b"no colon").decode(),
    "Basic " + base64.b64encode(b":password").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:password").decode(),
])
def test_what_is_no_credentials(header):
    assert basic_credentials(header) is None


def test_credentials():
    assert basic_credentials("basic " + base64.b64encode(b"al:ice:pw").decode()) == (
        "al", b"ice:pw")


def test_passwords_as_bcrypt_reads_them(reactor):
    """The first 72 bytes count, as for htpasswd; a NUL byte matches nothing."""
    long = b"x" * 72
    passwords = Passwords({"alice": hashed(long)}, reactor)
    assert result(passwords.user(basic(b"alice", long + b"ignored"))) == "alice"
    assert result(passwords.user(basic(b"alice", b"x\0"))) is None
