# -*- test-case-name: tests.test_policies,tests.test_routing -*-
"""
What every route table shares, V1's and V2's: routes declared on one Klein app, each with its
policy, matched on the path and method alone, and bodies that stream into storage opened by
the same checks that guard the route.

A subclass says what its policies check and how its handlers are called (L{_checked},
L{_applying}) and how it refuses a path or a host before routing.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from twistreg.web.body import decoded_path, routed_path, valid_host

#: A route's policy: whatever the table's subclass declares (its C{upload} attribute, None
#: or an opener, says whether the route's body streams into storage).
P = TypeVar("P")

#: A route's handler, called by the table's L{PolicyRoutes._applying}.
Handler = Callable[..., Any]


class PolicyRoutes(Generic[P]):
    """
    The routes of one protocol, on one Klein app (one URL map, so that a path's 405 lists
    the methods of every route family), each with the policy it declared.

    @ivar upload_methods: the methods of the routes whose body streams into storage.
    """

    def __init__(self) -> None:
        self.app = Klein()
        self.app.url_map.merge_slashes = False
        self._policies: dict[str, P] = {}
        self._families: dict[str, str] = {}
        self._adapter: MapAdapter | None = None
        self.upload_methods: frozenset[bytes] = frozenset()

    def mounted(self, policy: P) -> bool:
        """Whether a route with C{policy} exists in this registry."""
        return True

    def route(self, paths: str | tuple[str, ...], method: str, policy: P
              ) -> Callable[[Handler], Handler]:
        """Add a route (one method, one or more paths) with its policy."""

        def register(handler: Handler) -> Handler:
            if not self.mounted(policy):
                return handler
            for path in (paths,) if isinstance(paths, str) else paths:
                endpoint = f"{method} {path}"
                self._policies[endpoint] = policy
                self._families[endpoint] = route_family(handler, path)
                if getattr(policy, "upload", None) is not None:
                    self.upload_methods |= {method.encode("ascii")}
                self.app.route(path, methods=[method], endpoint=endpoint)(
                    self._applying(policy, handler))
            return handler

        return register

    def answer(self, request: IRequest) -> bytes | defer.Deferred:
        """
        The answer of the route C{request} matches: bytes, or a Deferred of them.

        @raise HTTPException: no route matches (werkzeug's C{NotFound},
            C{MethodNotAllowed}, or C{RequestRedirect} for a missing slash).
        @raise Exception: what L{_refuse_path} or L{_refuse_host} give.
        """
        path = routed_path(request.postpath)
        try:
            path_info = path.decode("utf-8")
        except UnicodeDecodeError:
            raise self._refuse_path(path) from None
        if not valid_host(request):
            raise self._refuse_host()
        endpoint, arguments = self._match(request.method, path_info)
        # The metrics' label: bounded, unlike the path (L{twistreg.metrics}).
        request.route_family = self._families[endpoint]
        return self.app.execute_endpoint(endpoint, request, **arguments)

    def _match(self, method: bytes, path_info: str) -> tuple[str, dict[str, Any]]:
        if self._adapter is None:
            # Bound once: routes depend on the path and method only, never on the host.
            self._adapter = self.app.url_map.bind("localhost")
        return self._adapter.match(path_info, method.decode("latin-1"))

    def policy_of(self, endpoint: str) -> P:
        """The policy a route declared (KeyError for a rule added around the table)."""
        return self._policies[endpoint]

    def undeclared(self) -> list[str]:
        """The rules of the URL map that no policy covers (added around L{route})."""
        return [rule.rule for rule in self.app.url_map.iter_rules()
                if rule.endpoint not in self._policies]

    def open_upload(self, request: IRequest, method: bytes, target: bytes,
                    authorization: str | None) -> defer.Deferred | None:
        """
        When C{method} and C{target} name a route whose body streams into storage: its
        checks and its sink, as the body starts to arrive (before any of it is stored).
        None for every other request.
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
        if policy is None or not self._streams(policy, target):
            return None
        opener = policy.upload  # type: ignore[attr-defined]

        async def open_sink() -> Any:
            call = await self._checked(policy, request, authorization, arguments)
            return await opener(call, **arguments)

        return defer.ensureDeferred(open_sink())

    def _streams(self, policy: P, target: bytes) -> bool:
        """Whether the body of a request to a route with C{policy} streams into storage."""
        return getattr(policy, "upload", None) is not None

    # What a subclass says.

    def _applying(self, policy: P, handler: Handler) -> Callable[..., Any]:
        """The endpoint Klein keeps for C{handler}: checks C{policy}, then calls it."""
        raise NotImplementedError

    async def _checked(self, policy: P, request: IRequest, authorization: str | None,
                       arguments: dict[str, Any]) -> Any:
        """The policy's checks, in the protocol's order; the call the handler gets."""
        raise NotImplementedError

    def _refuse_path(self, path: bytes) -> Exception:
        """The error for a path that is not UTF-8."""
        raise NotImplementedError

    def _refuse_host(self) -> Exception:
        """The error for a C{Host} header that is no host name."""
        raise NotImplementedError


def route_family(handler: Handler, path: str) -> str:
    """
    A route's family, the metrics' C{route} label: the module that declares it (C{ping},
    C{images}, C{blobs}, C{manifests}...), with V2's blob uploads apart from blob reads.
    """
    family = handler.__module__.rpartition(".")[2]
    if family == "blobs" and "/blobs/uploads" in path:
        return "uploads"
    return family
