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
from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, MapAdapter

from twistreg.errors import RegistryError
from twistreg.layout import Repository, parse_repository
from twistreg.registry.auth import Access, Token
from twistreg.registry.rules import Registry
from twistreg.web import responses
from twistreg.web.body import UploadBody, decoded_path, routed_path, valid_host


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
    """

    access: Access | None
    mirror: MirrorFallback | None = None
    conditional: bool = False
    mount: Mount = Mount.ALWAYS
    upload: UploadOpener | None = None


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


class RouteTable:
    """
    The V1 routes of one registry, on one Klein app (one URL map, so that a path's 405
    lists the methods of every route family).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.app = Klein()
        url_map = self.app.url_map
        url_map.merge_slashes = False
        url_map.converters["repo"] = RepositoryConverter
        self._policies: dict[str, Policy] = {}
        self._adapter: MapAdapter | None = None
        #: The methods of the routes whose body streams into storage.
        self.upload_methods: frozenset[bytes] = frozenset()

    def mounted(self, mount: Mount) -> bool:
        """Whether routes of C{mount} exist in this registry."""
        if mount is Mount.INDEX:
            return self.registry.settings.standalone
        if mount is Mount.SEARCH:
            return self.registry.search is not None
        return True

    def route(self, paths: str | tuple[str, ...], method: str, policy: Policy
              ) -> Callable[[Handler], Handler]:
        """
        Add a route (one method, one or more paths) with its policy; the handler gets a
        L{RouteCall} and the path's arguments, C{repo} parsed into C{call.repository}.
        """

        def register(handler: Handler) -> Handler:
            if not self.mounted(policy.mount):
                return handler
            for path in (paths,) if isinstance(paths, str) else paths:
                endpoint = f"{method} {path}"
                self._policies[endpoint] = policy
                if policy.upload is not None:
                    self.upload_methods |= {method.encode("ascii")}
                self.app.route(path, methods=[method], endpoint=endpoint)(
                    self._applying(policy, handler))
            return handler

        return register

    def answer(self, request: IRequest) -> bytes | defer.Deferred:
        """
        The answer of the route C{request} matches: bytes, or a Deferred of them.

        @raise RegistryError: a path that is not UTF-8, or a C{Host} that is no host name.
        @raise HTTPException: no route matches (werkzeug's C{NotFound},
            C{MethodNotAllowed}, or C{RequestRedirect} for a missing slash).
        """
        path = routed_path(request.postpath)
        try:
            path_info = path.decode("utf-8")
        except UnicodeDecodeError:
            if path.startswith(b"/v1/repositories/"):
                raise RegistryError(400, "Invalid repository name") from None
            raise RegistryError(404, "Not found") from None
        if not valid_host(request):
            raise RegistryError(400, "Invalid Host header")
        endpoint, arguments = self._match(request.method, path_info)
        return self.app.execute_endpoint(endpoint, request, **arguments)

    def _match(self, method: bytes, path_info: str) -> tuple[str, dict[str, Any]]:
        if self._adapter is None:
            # Bound once: routes depend on the path and method only, never on the host.
            self._adapter = self.app.url_map.bind("localhost")
        return self._adapter.match(path_info, method.decode("latin-1"))

    def policy_of(self, endpoint: str) -> Policy:
        """The policy a route declared (KeyError for a rule added around the table)."""
        return self._policies[endpoint]

    def undeclared(self) -> list[str]:
        """The rules of the URL map that no policy covers (added around L{route})."""
        return [rule.rule for rule in self.app.url_map.iter_rules()
                if rule.endpoint not in self._policies]

    def _call(self, policy: Policy, request: IRequest, arguments: dict[str, Any]) -> RouteCall:
        """The call, with the path's repository name parsed: the first check of all."""
        call = RouteCall(request, self.registry, policy)
        repo = arguments.pop("repo", None)
        if repo is not None:
            call.repository = parse_repository(repo)
        return call

    async def _checked(self, policy: Policy, request: IRequest, authorization: str | None,
                       arguments: dict[str, Any]) -> RouteCall:
        """The policy's checks in the contract's order: repository name, then access."""
        call = self._call(policy, request, arguments)
        if policy.access is not None:
            call.token = await self.registry.auth.authorize(
                policy.access, authorization, call.repository)
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

    def open_upload(self, request: IRequest, method: bytes, target: bytes,
                    authorization: str | None) -> defer.Deferred | None:
        """
        When C{method} and C{target} name a route whose body streams into storage: its
        access check and its sink, as the body starts to arrive (before any of it is
        stored).  None for every other request.
        """
        try:
            path_info = decoded_path(target).decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            endpoint, arguments = self._match(method, path_info)
        except HTTPException:
            return None
        policy = self._policies.get(endpoint)
        if policy is None or policy.upload is None:
            return None
        opener = policy.upload

        async def open_sink() -> Any:
            call = await self._checked(policy, request, authorization, arguments)
            return await opener(call, **arguments)

        return defer.ensureDeferred(open_sink())
