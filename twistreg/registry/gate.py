# -*- test-case-name: tests.test_gate,tests.test_gate_policies -*-
"""
What every route with an access policy passes, in V1 and V2 alike: the password of an
htpasswd user (C{auth.htpasswd}), a writer's rights for a write, and a registry that takes
writes at all (C{readonly}).

The refusals are L{RegistryError}s with V1's body; the V2 routes give the same status and
message in the spec's form.  Each holds what the route's table needs to say it in its own words.
"""

from __future__ import annotations

from twisted.logger import Logger

from twistreg.config import Settings
from twistreg.errors import RegistryError
from twistreg.registry.auth import Access
from twistreg.registry.passwords import Passwords, basic_credentials

log = Logger()


class LoginRequired(RegistryError):
    """401: no credentials, or wrong ones; with the C{Basic} challenge clients answer."""

    def __init__(self, message: str, realm: str) -> None:
        super().__init__(401, message, {"WWW-Authenticate": f'Basic realm="{realm}"'})


class ReaderOnly(RegistryError):
    """403: a user of C{auth.htpasswd.readers} asked to write or delete."""

    def __init__(self, user: str) -> None:
        super().__init__(403, f"User {user} may only read")


class ReadOnlyRegistry(RegistryError):
    """
    405: the registry is read-only.  The Go registry's status for the same refusal, which
    docker reports as such; a 503 would have clients retry a push that cannot succeed.
    """

    def __init__(self) -> None:
        super().__init__(405, "Registry is in read-only mode")


class Gate:
    """
    The checks of C{readonly} and C{auth} for one registry.

    @ivar readonly: whether writes are refused.
    """

    def __init__(self, settings: Settings, reactor) -> None:
        self.readonly = settings.readonly
        self._passwords: Passwords | None = None
        if settings.passwords is not None:
            self._passwords = Passwords(settings.passwords.users, reactor)
            self._readers = settings.passwords.readers
            self._realm = settings.passwords.realm

    @property
    def asks_passwords(self) -> bool:
        """Whether C{auth.htpasswd} is set."""
        return self._passwords is not None

    async def admit(self, access: Access, authorization: str | None, *,
                    passwords: bool = True) -> str | None:
        """
        Let a request to a route that does C{access} through, or refuse it: the password,
        then the user's rights, then a read-only registry.

        @param authorization: the request's C{Authorization} header.
        @param passwords: whether passwords apply to this request's protocol and mode.
        @return: the user, when passwords were checked.
        @raise LoginRequired: no password, or a wrong one.
        @raise ReaderOnly: a reader's write.
        @raise ReadOnlyRegistry: a write to a read-only registry.
        """
        user = None
        if passwords and self._passwords is not None:
            user = await self._passwords.user(authorization)
            if user is None:
                credentials = basic_credentials(authorization)
                if credentials is None:
                    raise LoginRequired("Requires authorization", self._realm)
                # The name only: the password never reaches a log.
                log.info("password refused for user {user!r}", user=credentials[0])
                raise LoginRequired("Invalid username or password", self._realm)
            if access is not Access.READ and user in self._readers:
                raise ReaderOnly(user)
        if self.readonly and access is not Access.READ:
            raise ReadOnlyRegistry()
        return user
