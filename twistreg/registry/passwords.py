# -*- test-case-name: tests.test_passwords -*-
"""
Who sent a request, from its C{Authorization: Basic} credentials and the users of the
htpasswd file (docs/configuration.md).

A bcrypt check costs tens of milliseconds of CPU by design, and a pull makes dozens of
requests with the same credentials: a check that passed is remembered for
L{VERIFIED_TTL} seconds in this process, under a keyed hash of the credentials, never the
password.  Checks run in the reactor's thread pool (bcrypt lets go of the interpreter lock),
so a stream of wrong passwords slows no other request.  Nothing is shared between processes:
each one checks on its own what every one may read from the same file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

import bcrypt
from twisted.internet import threads

from twistreg.registry.auth import TTLCache

#: Seconds a password that passed its check is taken again without one.
VERIFIED_TTL = 60.0

# bcrypt reads the first 72 bytes of a password, htpasswd's hashes included; recent bcrypt
# packages refuse longer ones instead of cutting them.
_BCRYPT_LENGTH = 72


def basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """
    The user name and password of an C{Authorization: Basic} value, or None when the header
    is missing, of another scheme, or malformed.

    @param authorization: the header as the web layer decoded it (latin-1).
    """
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
        user, colon, password = decoded.partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not colon or not name:
        return None
    return name, password


def _matches(password: bytes, hashed: bytes) -> bool:
    """bcrypt's own check, in constant time; a password bcrypt cannot take matches nothing."""
    try:
        return bcrypt.checkpw(password[:_BCRYPT_LENGTH], hashed)
    except ValueError:  # a NUL byte
        return False


class Passwords:
    """
    The users of one htpasswd file.

    @param users: each user's bcrypt hash.
    @param reactor: its clock times the remembered checks, its thread pool runs them.
    """

    def __init__(self, users: Mapping[str, bytes], reactor) -> None:
        self._users = users
        self._reactor = reactor
        # Keys the hashes of remembered credentials: they mean nothing outside this process.
        self._secret = os.urandom(32)
        self._verified = TTLCache(reactor, VERIFIED_TTL)
        # An unknown user costs a check all the same, against a real entry, so the time an
        # answer takes does not tell which users exist.
        self._decoy = next(iter(users.values()), None)

    async def user(self, authorization: str | None) -> str | None:
        """The user whose password the C{Authorization} header holds; None if none does."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            return None
        name, password = credentials
        # No colon in a user name: "name:" then the password is one reading only.
        key = (hmac.new(self._secret, name.encode("utf-8") + b":" + password,
                        hashlib.sha256).digest(),)
        if key in self._verified:
            return name
        hashed = self._users.get(name)
        against = hashed if hashed is not None else self._decoy
        if against is None:
            return None
        matched = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _matches, password, against)
        if not matched or hashed is None:
            return None
        self._verified.add(key)
        return name
