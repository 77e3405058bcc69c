# -*- test-case-name: tests.test_htpasswd -*-
"""
Read an htpasswd file of bcrypt entries, as C{htpasswd -B} writes them: C{user:$2y$...}, one
a line.

Only bcrypt is taken: Apache's other formats (MD5 C{$apr1$}, C{{SHA}}, crypt, plain text) are
fast to guess, and refusing them at start says so at once instead of refusing every login.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The modular crypt format of bcrypt: $2a$, $2b$ or $2y$ (the same algorithm), a two-digit
# cost, then 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class HtpasswdError(Exception):
    """The file cannot be used; C{str(e)} is one line naming the file (and the line)."""


def read_htpasswd(path: str) -> Mapping[str, bytes]:
    """
    The users of an htpasswd file and their bcrypt hashes.

    Blank lines and lines starting with C{#} are skipped, as Apache skips them.

    @raise HtpasswdError: the file cannot be read, or a line is not C{user:bcrypt-hash}.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise HtpasswdError(
            f"cannot read htpasswd file {path}: {error.strerror or error}") from None
    users: dict[str, bytes] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue

        def bad(why: str, number: int = number) -> HtpasswdError:
            return HtpasswdError(f"htpasswd file {path}, line {number}: {why}")

        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("not UTF-8") from None
        user, colon, hashed = text.partition(":")
        if not colon or not user:
            raise bad("not user:hash")
        if user in users:
            raise bad(f"user {user!r} is listed twice")
        if not _BCRYPT.fullmatch(hashed):
            # Never the hash itself in the message: it is as good as a password to a guesser.
            raise bad(f"the entry of {user!r} is not a bcrypt hash (write it with htpasswd -B)")
        users[user] = hashed.encode("ascii")
    return users
