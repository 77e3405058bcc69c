# -*- test-case-name: tests.test_policies,tests.test_routing -*-
"""
The V1 route table: every route declares its policy, and this module alone applies it.

A policy says what access the route needs, whether the mirror may answer a local miss,
whether the route honours C{If-Modified-Since}, when it is mounted, and whether its body
streams into storage.  The checks run in the contract's order (docs/api.md): the
repository name, then the access check, then the route's own steps.  A route cannot be
added without a policy, and a streamed body is authorized before its first byte is
stored, by the same code that authorizes the route.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable
from typing import Any, Callable, Optional, Union

import attrs
from twisted.internet import defer
from twisted.web.iweb import IRequest
from werkzeug.routing import BaseConverter

from twistreg.errors import RegistryError
from twistreg.layout import Repository, parse_repository
from twistreg.registry.auth import Access, Token
from twistreg.registry.gate import Gate
from twistreg.registry.rules import Registry
from twistreg.web import responses
from twistreg.web.body import UploadBody
from twistreg.web.routing import PolicyRoutes


class RepositoryConverter(BaseConverter):
    """
    C{<repo:name>}: one or more segments, the shortest that lets the rest match.

    Any character may appear, C{/} and newlines included, so that names with empty or
    leading components reach L{parse_repository} and get its 400 rather than a 404.
    """

    regex = r"(?s:.+?)"
    part_isolating = False
    weight = 200


class Mount(enum.Enum):
    """When a route exists (docs/api.md)."""

    ALWAYS = "always"
    #: The index a standalone registry emulates (R20–R25).
    INDEX = "standalone"
    #: Search, when a search backend is configured (R26).
    SEARCH = "search"


class Missing(RegistryError):
    """A 404 for a resource this registry lacks: the mirror may answer it instead."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class NotModified(Exception):
    """The resource exists and the client holds it (the IMS rule of §4.1)."""


#: Answers a local miss from the mirror, given the call, the mirror and the route's
#: arguments: the response body, or None to keep the 404.
MirrorFallback = Callable[..., Awaitable[Optional[bytes]]]

#: Opens the sink a streamed body goes to, after the route's access check passed.
UploadOpener = Callable[..., Awaitable[Any]]


@attrs.frozen
class Policy:
    """
    What one route declares.

    @ivar access: what the route does to the registry; None for open routes (no check).
    @ivar mirror: how the mirror answers a L{Missing} resource; None: the 404 stands.
    @ivar conditional: whether C{If-Modified-Since} gives a 304 once the resource is
        found (the route calls L{RouteCall.found}).
    @ivar mount: when the route exists.
    @ivar upload: for a body streamed into storage: opens its sink, given the route's
        arguments, when the body starts to arrive.
    @ivar login: for an open route: a password is asked all the same when passwords are
        on (search lists the repositories a login protects).
    """

    access: Access | None
    mirror: MirrorFallback | None = None
    conditional: bool = False
    mount: Mount = Mount.ALWAYS
    upload: UploadOpener | None = None
    login: bool = False


@attrs.define
class RouteCall:
    """
    One request to a route, its policy's checks passed.

    @ivar repository: the route's validated repository, when its path has one.
    @ivar token: the validated token, in token mode.
    """

    request: IRequest
    registry: Registry
    policy: Policy
    repository: Repository | None = None
    token: Token | None = None

    def header(self, name: bytes) -> str | None:
        """The first occurrence of a request header (the contract reads the first)."""
        return first_header(self.request, name)

    @property
    def authorization(self) -> str | None:
        return self.header(b"Authorization")

    def body(self) -> bytes:
        """The request body (capped in size before routing)."""
        return self.request.content.getvalue()

    def now(self) -> float:
        return self.registry.clock.seconds()

    def found(self) -> None:
        """
        The resource exists locally and every earlier check passed.

        @raise NotModified: the route is conditional and the client sent
            C{If-Modified-Since} (any value: it is not parsed).
        """
        if self.policy.conditional and self.request.getHeader(b"If-Modified-Since") is not None:
            raise NotModified()


def first_header(request: IRequest, name: bytes) -> str | None:
    """The first value of a request header, as text (C{getHeader} gives the last)."""
    values = request.requestHeaders.getRawHeaders(name)
    return None if not values else values[0].decode("latin-1")


def upstream_request(request: IRequest) -> tuple[str, dict[str, str]]:
    """The request as the mirror forwards it: the path and query as received, the headers."""
    headers = {
        name.decode("latin-1"): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }
    return request.uri.decode("latin-1"), headers


#: A route: C{async def} (or a plain function for an open route that answers at once).
Handler = Callable[..., Union[bytes, Awaitable[bytes]]]


class RouteTable(PolicyRoutes[Policy]):
    """
    The V1 routes of one registry: policies checked in the contract's order.

    @ivar gate: the passwords (standalone) and read-only checks of every protected route.
    """

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry
        self.gate = Gate(registry.settings, registry.clock)
        self.app.url_map.converters["repo"] = RepositoryConverter

    def mounted(self, policy: Policy) -> bool:
        """Whether routes of C{policy.mount} exist in this registry."""
        if policy.mount is Mount.INDEX:
            return self.registry.settings.standalone
        if policy.mount is Mount.SEARCH:
            return self.registry.search is not None
        return True

    def _refuse_path(self, path: bytes) -> Exception:
        if path.startswith(b"/v1/repositories/"):
            return RegistryError(400, "Invalid repository name")
        return RegistryError(404, "Not found")

    def _refuse_host(self) -> Exception:
        return RegistryError(400, "Invalid Host header")

    def _call(self, policy: Policy, request: IRequest, arguments: dict[str, Any]) -> RouteCall:
        """The call, with the path's repository name parsed: the first check of all."""
        call = RouteCall(request, self.registry, policy)
        repo = arguments.pop("repo", None)
        if repo is not None:
            call.repository = parse_repository(repo)
        return call

    async def _checked(self, policy: Policy, request: IRequest, authorization: str | None,
                       arguments: dict[str, Any]) -> RouteCall:
        """
        The policy's checks in the contract's order: repository name, then access (a token,
        or a password), then a read-only registry's refusal of writes.
        """
        call = self._call(policy, request, arguments)
        if policy.access is not None:
            call.token = await self.registry.auth.authorize(
                policy.access, authorization, call.repository)
            # Passwords are V1's in standalone mode only: behind an index, its tokens decide.
            await self.gate.admit(policy.access, authorization,
                                  passwords=self.registry.settings.standalone)
        elif policy.login:
            await self.gate.admit(Access.READ, authorization,
                                  passwords=self.registry.settings.standalone)
        return call

    def _applying(self, policy: Policy, handler: Handler) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(handler):
            if policy != Policy(None, mount=policy.mount):
                raise TypeError(f"{handler.__name__}: only an open route may answer at once")

            # An open route that answers at once: no check to wait for, no Deferred.
            def answer(request: IRequest, **arguments: Any) -> bytes:
                return handler(self._call(policy, request, arguments), **arguments)

            return answer

        def apply(request: IRequest, **arguments: Any) -> defer.Deferred:
            return defer.ensureDeferred(checked_then_handled(request, arguments))

        async def checked_then_handled(request: IRequest, arguments: dict[str, Any]) -> bytes:
            if isinstance(request.content, UploadBody):
                # A streamed body: authorized when it began (open_upload), not again.
                call = self._call(policy, request, arguments)
            else:
                call = await self._checked(policy, request, first_header(
                    request, b"Authorization"), arguments)
            try:
                return await handler(call, **arguments)
            except NotModified:
                return responses.not_modified(request, call.now())
            except Missing:
                mirror = self.registry.mirror
                if policy.mirror is None or mirror is None:
                    raise
                answer = await policy.mirror(call, mirror, **arguments)
                if answer is None:
                    raise
                return answer

        return apply
