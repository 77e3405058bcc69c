# -*- test-case-name: tests.test_v2_routes,tests.test_policies -*-
"""
The V2 route table (the OCI Distribution API): every route declares its policy, and this
module alone applies it, in the spec's order: the repository name, then access, then the
route's own steps.  Every answer under C{/v2/} carries C{Docker-Distribution-API-Version}.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, Callable
from urllib.parse import parse_qs

import attrs
from twisted.internet import defer
from twisted.web.iweb import IRequest
from werkzeug.routing import BaseConverter

from twistreg.compat import request_line
from twistreg.oci.errors import Denied, NameUnknown, OCIError, Unauthorized, Unsupported
from twistreg.oci.names import parse_name
from twistreg.registry.auth import Access
from twistreg.registry.gate import Gate, LoginRequired, ReaderOnly, ReadOnlyRegistry
from twistreg.registry.rules import Registry
from twistreg.web.body import UploadBody
from twistreg.web.routing import PolicyRoutes

API_VERSION = (b"Docker-Distribution-API-Version", b"registry/2.0")

#: The challenge of a registry that asks for credentials it has no way to check yet.
_CHALLENGE = 'Basic realm="twistreg"'


class NameConverter(BaseConverter):
    """
    C{<name:name>}: one or more segments, the shortest that lets the rest match (so
    C{/v2/a/manifests/b/manifests/c} is repository C{a/manifests/b}); any text, so that a
    name outside the grammar reaches L{parse_name} and gets C{NAME_INVALID}, not a 404.
    """

    regex = r"(?s:.+?)"
    part_isolating = False
    weight = 200


#: Opens the sink a streamed body goes to, after the route's checks passed.
UploadOpener = Callable[..., Awaitable[Any]]


@attrs.frozen
class Policy:
    """
    What one V2 route declares.

    @ivar access: what the route does to the repository.
    @ivar upload: for a body streamed into storage: opens its sink, given the route's
        arguments, when the body starts to arrive.
    @ivar streams_with: a query parameter whose presence alone makes the body stream
        (C{POST .../blobs/uploads/?digest=}); None: every body of the route streams.
    """

    access: Access
    upload: UploadOpener | None = None
    streams_with: bytes | None = None


@attrs.define
class V2Call:
    """One request to a V2 route, its policy's checks passed; C{name} is the repository's."""

    request: IRequest
    name: str | None = None

    def header(self, name: bytes) -> str | None:
        """The first occurrence of a request header."""
        values = self.request.requestHeaders.getRawHeaders(name)
        return None if not values else values[0].decode("latin-1")

    def query(self, name: bytes) -> str | None:
        """
        The first value of a query parameter, or None; also while the body arrives, before
        twisted.web parsed the query (a streamed body's checks run then).
        """
        args = self.request.args
        if args is None:
            target = request_line(self.request.channel)[1] or b""
            args = parse_qs(target.partition(b"?")[2], keep_blank_values=True)
        values = args.get(name)
        return None if not values else values[0].decode("utf-8", "replace")


Handler = Callable[..., Awaitable[bytes]]

_DECIMAL = re.compile(r"[0-9]{1,18}")


def decimal(text: str) -> int | None:
    """
    A non-negative number a client wrote in a query or header, or None: ASCII digits only
    (C{str.isdigit} takes C{"²"}, which C{int} refuses) and few enough of them (C{int}
    refuses thousands).
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


class V2Routes(PolicyRoutes[Policy]):
    """
    The V2 routes of one registry.

    @ivar gate: the passwords and read-only checks of every route.
    """

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry
        self.gate = Gate(registry.settings, registry.clock)
        self.app.url_map.converters["name"] = NameConverter

    def answer(self, request: IRequest) -> bytes | defer.Deferred:
        request.setHeader(*API_VERSION)
        return super().answer(request)

    def _refuse_path(self, path: bytes) -> Exception:
        return NameUnknown("repository name not known to registry")

    def _refuse_host(self) -> Exception:
        return OCIError(400, "UNSUPPORTED", "the Host header is no host name")

    def _streams(self, policy: Policy, target: bytes) -> bool:
        if policy.upload is None:
            return False
        if policy.streams_with is None:
            return True
        query = target.partition(b"?")[2]
        return any(part.partition(b"=")[0] == policy.streams_with
                   for part in query.split(b"&"))

    async def _checked(self, policy: Policy, request: IRequest, authorization: str | None,
                       arguments: dict[str, Any]) -> V2Call:
        call = V2Call(request)
        name = arguments.pop("name", None)
        if name is not None:
            call.name = parse_name(name)
        await self._authorize(policy.access, authorization)
        return call

    async def _authorize(self, access: Access, authorization: str | None) -> None:
        """
        With C{auth.htpasswd}, the users' passwords; else, standalone, V2 is open as V1 is,
        and behind an index, whose tokens V2 clients never get, every route asks for
        credentials.  Then a read-only registry refuses writes.
        """
        if not self.gate.asks_passwords and not self.registry.settings.standalone:
            raise Unauthorized("authentication required",
                               headers={"WWW-Authenticate": _CHALLENGE})
        # The gate's refusals in the spec's terms: the same status and message.
        try:
            await self.gate.admit(access, authorization)
        except LoginRequired as error:
            raise Unauthorized(error.message, headers=error.headers) from None
        except ReaderOnly as error:
            raise Denied(error.message) from None
        except ReadOnlyRegistry as error:
            raise Unsupported(error.message) from None

    def _applying(self, policy: Policy, handler: Handler) -> Callable[..., Any]:
        def apply(request: IRequest, **arguments: Any) -> defer.Deferred:
            return defer.ensureDeferred(checked_then_handled(request, arguments))

        async def checked_then_handled(request: IRequest, arguments: dict[str, Any]) -> bytes:
            if isinstance(request.content, UploadBody):
                # A streamed body: checked when it began (open_upload), not again.
                call = V2Call(request, arguments.pop("name", None))
            else:
                values = request.requestHeaders.getRawHeaders(b"Authorization")
                call = await self._checked(
                    policy, request, None if not values else values[0].decode("latin-1"),
                    arguments)
            return await handler(call, **arguments)

        return apply
