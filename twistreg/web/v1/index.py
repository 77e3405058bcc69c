# -*- test-case-name: tests.test_routes_index -*-
"""
R20–R25: the index a standalone registry emulates for docker 1.x (image lists, tokens and
users that nothing stores).  Mounted in standalone mode only.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from twistreg.config import Settings
from twistreg.errors import RegistryError
from twistreg.registry.auth import Access
from twistreg.registry.documents import parse_json
from twistreg.registry.index import make_token
from twistreg.registry.mirror import Mirror
from twistreg.web import responses
from twistreg.web.v1.routes import (
    Missing,
    Mount,
    Policy,
    RouteCall,
    RouteTable,
    first_header,
    upstream_request,
)

_IMAGES = "/v1/repositories/<repo:repo>/images"


def endpoints(request: IRequest, settings: Settings) -> str:
    """C{X-Docker-Endpoints}: the configured endpoints, else the Host header, else our address."""
    if settings.registry_endpoints:
        return settings.registry_endpoints
    host = first_header(request, b"Host")
    if host:
        return host
    address = request.getHost()
    return f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"


def _token_headers(call: RouteCall, access: Access) -> None:
    """R22's three headers, for the repository and access of the route."""
    assert call.repository is not None
    token = make_token(call.repository, access.value).encode()
    call.request.setHeader(b"X-Docker-Token", token)
    call.request.setHeader(b"WWW-Authenticate", token)
    call.request.setHeader(b"X-Docker-Endpoints",
                           endpoints(call.request, call.registry.settings).encode())


async def _upstream_images(call: RouteCall, mirror: Mirror, **arguments: str) -> bytes | None:
    """R23 in mirror mode: the index source's list with its token headers, nothing stored."""
    path, headers = upstream_request(call.request)
    answer = await mirror.fetch(path, headers, index=True)
    if answer is None:
        return None
    for name in ("X-Docker-Token", "WWW-Authenticate"):
        values = answer.headers.get(name.lower())
        if values:
            call.request.responseHeaders.setRawHeaders(name, list(values))
    call.request.setHeader(b"X-Docker-Endpoints",
                           endpoints(call.request, call.registry.settings).encode())
    return responses.raw_json_body(call.request, answer.body)


def add_index_routes(v1: RouteTable) -> None:
    """R20–R25."""
    index = v1.registry.index

    @v1.route(_IMAGES, "PUT", Policy(Access.WRITE, mount=Mount.INDEX))
    async def put_repository_images(call: RouteCall) -> bytes:
        await index.put_images(call.repository, call.body())
        _token_headers(call, Access.WRITE)
        return responses.no_content(call.request)

    @v1.route(_IMAGES, "GET", Policy(Access.READ, mount=Mount.INDEX, mirror=_upstream_images))
    async def get_repository_images(call: RouteCall) -> bytes:
        v2_view = call.registry.v2_view
        bridged = [] if v2_view is None else await v2_view.image_ids(call.repository)
        body = await index.get_images(call.repository, bridged)
        if body is None:
            raise Missing("images not found")
        _token_headers(call, Access.READ)
        return responses.raw_json_body(call.request, body)

    @v1.route(_IMAGES, "DELETE", Policy(Access.DELETE, mount=Mount.INDEX))
    async def delete_repository_images(call: RouteCall) -> bytes:
        _token_headers(call, Access.DELETE)
        return responses.no_content(call.request)

    @v1.route("/v1/repositories/<repo:repo>/auth", "PUT", Policy(None, mount=Mount.INDEX))
    def put_repository_auth(call: RouteCall) -> bytes:
        return responses.json_body(call.request, "OK")

    @v1.route("/v1/repositories/<repo:repo>", "PUT", Policy(Access.WRITE, mount=Mount.INDEX))
    async def put_repository(call: RouteCall) -> bytes:
        await index.put_images(call.repository, call.body())
        _token_headers(call, Access.WRITE)
        return responses.json_body(call.request, "")

    @v1.route(("/v1/users/", "/v1/users"), "GET", Policy(None, mount=Mount.INDEX))
    def get_users(call: RouteCall) -> bytes:
        return responses.json_body(call.request, "OK")

    @v1.route(("/v1/users/", "/v1/users"), "POST", Policy(None, mount=Mount.INDEX))
    def create_user(call: RouteCall) -> bytes:
        try:
            parse_json(call.body())
        except ValueError:
            raise RegistryError(400, "Error Decoding JSON") from None
        return responses.json_body(call.request, "User Created", 201)

    @v1.route(("/v1/users/<username>/", "/v1/users/<username>"), "PUT",
              Policy(None, mount=Mount.INDEX))
    def update_user(call: RouteCall, username: str) -> bytes:
        return responses.no_content(call.request)
