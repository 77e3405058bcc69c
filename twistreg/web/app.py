# -*- test-case-name: tests.test_app -*-
"""
The Klein app: one route per V1 endpoint.  Routes are thin: parse, call the registry's
rules, render.  Every failure leaves through one of the error handlers at the bottom, as
C{{"error": ...}} JSON.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Awaitable
from typing import Any, Callable

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, RequestRedirect

from twistreg.config import Settings
from twistreg.errors import RegistryError
from twistreg.layout import Repository, image_key, parse_repository
from twistreg.registry.auth import Access, Token
from twistreg.registry.documents import parse_json
from twistreg.registry.images import not_found
from twistreg.registry.index import make_token
from twistreg.registry.mirror import UpstreamAnswer
from twistreg.registry.rules import Registry
from twistreg.registry.tags import DEFAULT_METADATA
from twistreg.web import responses
from twistreg.web.body import UploadBody, store_buffered_layer
from twistreg.web.layers import relay_layer, send_layer
from twistreg.web.search import add_search_route

log = Logger()


class RepositoryConverter(BaseConverter):
    """
    C{<repo:name>}: one or more segments, the shortest that lets the rest match.

    Any character may appear, C{/} and newlines included, so that names with empty or
    leading components reach L{parse_repository} and get its 400 rather than a 404.
    """

    regex = r"(?s:.+?)"
    part_isolating = False
    weight = 200


def _header(request: IRequest, name: bytes) -> str | None:
    """
    The first occurrence of a request header (C{getHeader} gives the last one; the contract
    reads the first, e.g. R5's C{X-Docker-Checksum-Payload}).
    """
    values = request.requestHeaders.getRawHeaders(name)
    return None if not values else values[0].decode("latin-1")


_METHOD_ACCESS = {
    b"GET": Access.READ, b"HEAD": Access.READ,
    b"PUT": Access.WRITE, b"POST": Access.WRITE,
    b"DELETE": Access.DELETE,
}


def _body(request: IRequest) -> bytes:
    return request.content.getvalue()


def _modified_since(request: IRequest) -> bool:
    return request.getHeader(b"If-Modified-Since") is not None


def _ping_body(settings: Settings) -> dict[str, Any]:
    """R1's debug body: the host, the command line and the loaded modules' versions."""
    versions = {
        name: module.__version__
        for name, module in list(sys.modules.items())
        if not name.startswith("_") and isinstance(getattr(module, "__version__", None), str)
    }
    versions["python"] = sys.version
    return {"host": list(platform.uname()), "launch": sys.argv, "versions": versions}


class _Upstream:
    """A request as the mirror forwards it: the path and query as received, the headers."""

    def __init__(self, request: IRequest) -> None:
        self.path = request.uri.decode("latin-1")
        self.headers = {
            name.decode("latin-1"): values[0].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }


def build_app(registry: Registry) -> Klein:
    """
    A Klein app serving C{registry}; index routes are mounted in standalone mode only, the
    search route when search is on.
    """
    settings, auth, mirror = registry.settings, registry.auth, registry.mirror
    images, tags = registry.images, registry.tags
    app = Klein()
    url_map = app.url_map
    url_map.merge_slashes = False
    url_map.converters["repo"] = RepositoryConverter

    def now() -> float:
        return registry.clock.seconds()

    def route(path: str, methods: list[str]) -> Callable:
        def register(handler: Callable) -> Callable:
            return app.route(path, methods=methods, endpoint=f"{handler.__name__} {path}")(
                handler
            )

        return register

    async def authorize(request: IRequest, repository: Repository | None = None) -> Token | None:
        return await auth.authorize(
            _METHOD_ACCESS[request.method], _header(request, b"Authorization"), repository
        )

    async def repository_of(request: IRequest, repo: str) -> Repository:
        """The route's repository: the name checked first, then the client's rights to it."""
        repository = parse_repository(repo)
        await authorize(request, repository)
        return repository

    async def from_upstream(request: IRequest, **kwargs) -> UpstreamAnswer | None:
        """Upstream's answer to this request, in mirror mode."""
        if mirror is None:
            return None
        upstream = _Upstream(request)
        return await mirror.fetch(upstream.path, upstream.headers, **kwargs)

    # R1, R2
    @route("/_ping", ["GET"])
    @route("/v1/_ping", ["GET"])
    def ping(request: IRequest) -> bytes:
        standalone = "True" if settings.standalone else "False"
        if settings.mirroring_source:
            standalone = "mirror"
        request.setHeader(b"X-Docker-Registry-Standalone", standalone.encode())
        if not settings.debug:
            return responses.json_body(request, {})
        request.setHeader(b"X-Docker-Registry-Config", settings.flavor.encode())
        return responses.json_body(request, _ping_body(settings))

    @route("/", ["GET"])
    def banner(request: IRequest) -> bytes:
        return responses.json_body(request, settings.issue if settings.issue else True)

    # R3, R4
    @route("/v1/images/<image_id>/layer", ["GET"])
    async def get_layer(request: IRequest, image_id: str) -> bytes:
        await authorize(request)
        size = await images.check_layer(image_id, _header(request, b"Authorization"))
        if size is None:
            if mirror is not None:
                upstream = _Upstream(request)
                layer = await mirror.layer(upstream.path, upstream.headers, image_id)
                if layer is not None:
                    return await relay_layer(request, layer, image_id, now())
            raise not_found()
        if _modified_since(request):
            return responses.not_modified(request, now())
        return await send_layer(request, images, settings, image_id, size, now(),
                                _header(request, b"Range"))

    @route("/v1/images/<image_id>/layer", ["PUT"])
    async def put_layer(request: IRequest, image_id: str) -> bytes:
        # The streaming body was authorized before its first byte was stored.
        if isinstance(request.content, UploadBody):
            await request.content.commit()
        else:
            # A Site without twistreg's request factory buffered the body.
            await authorize(request)
            await store_buffered_layer(await images.begin_layer_upload(image_id), request.content)
        return responses.json_body(request, True)

    # R5
    @route("/v1/images/<image_id>/checksum", ["PUT"])
    async def put_checksum(request: IRequest, image_id: str) -> bytes:
        await authorize(request)
        await images.put_checksum(image_id, _header(request, b"X-Docker-Checksum-Payload"))
        return responses.json_body(request, True)

    # R6, R8
    @route("/v1/images/<image_id>/json", ["GET"])
    async def get_image_json(request: IRequest, image_id: str) -> bytes:
        await authorize(request)
        if not await images.check_json(image_id, _header(request, b"Authorization")):
            answer = await stored_from_upstream(request, image_id, "json")
            for name in ("X-Docker-Size", "X-Docker-Checksum-Payload"):
                values = answer.headers.get(name.lower())
                if values:
                    request.responseHeaders.setRawHeaders(name, list(values))
            return responses.cacheable_body(request, now(), answer.body)
        if _modified_since(request):
            return responses.not_modified(request, now())
        body, size, checksums = await images.get_json(image_id)
        if size is not None:
            request.setHeader(b"X-Docker-Size", b"%d" % size)
        if checksums:
            request.responseHeaders.setRawHeaders(
                b"X-Docker-Checksum-Payload", [c.encode() for c in checksums]
            )
        return responses.cacheable_body(request, now(), body)

    async def stored_from_upstream(request: IRequest, image_id: str, name: str) -> UpstreamAnswer:
        """R6/R7 in mirror mode: upstream's document, kept; else the local 404."""
        answer = None
        if mirror is not None:
            upstream = _Upstream(request)
            answer = await mirror.fetch_and_store(
                upstream.path, upstream.headers, image_key(image_id, name))
        if answer is None:
            raise not_found()
        return answer

    @route("/v1/images/<image_id>/json", ["PUT"])
    async def put_image_json(request: IRequest, image_id: str) -> bytes:
        token = await authorize(request)
        await images.put_json(image_id, _body(request), token, _header(request, b"Authorization"))
        return responses.json_body(request, True)

    # R7
    @route("/v1/images/<image_id>/ancestry", ["GET"])
    async def get_ancestry(request: IRequest, image_id: str) -> bytes:
        await authorize(request)
        if not await images.check_ancestry(image_id):
            answer = await stored_from_upstream(request, image_id, "ancestry")
            return responses.cacheable_body(request, now(), answer.body)
        if _modified_since(request):
            return responses.not_modified(request, now())
        ancestry = await images.get_ancestry(image_id)
        return responses.cacheable_body(request, now(), responses.render_json(ancestry))

    # R9, R10
    async def layer_listing(request: IRequest, image_id: str, cache: str,
                            compute: Callable[[str], Awaitable[bytes]]) -> bytes:
        """R9 and R10 differ only in what they compute from the layer and cache."""
        await authorize(request)
        await images.check_files(image_id, cache, _header(request, b"Authorization"))
        if _modified_since(request):
            return responses.not_modified(request, now())
        return responses.cacheable_body(request, now(), await compute(image_id))

    @route("/v1/images/<image_id>/files", ["GET"])
    async def get_files(request: IRequest, image_id: str) -> bytes:
        return await layer_listing(request, image_id, "_files", images.get_files)

    @route("/v1/images/<image_id>/diff", ["GET"])
    async def get_diff(request: IRequest, image_id: str) -> bytes:
        return await layer_listing(request, image_id, "_diff", images.get_diff)

    # R17, R12, R13, R14
    @route("/v1/repositories/<repo:repo>/tags/<tag>/json", ["GET"])
    async def get_tag_json(request: IRequest, repo: str, tag: str) -> bytes:
        metadata = await tags.tag_json(await repository_of(request, repo), tag)
        return responses.json_body(request, DEFAULT_METADATA if metadata is None else metadata)

    async def local_or_upstream(request: IRequest, value: Any, missing: str) -> bytes:
        """R11/R12: the local answer, else upstream's body as it is (mirror), else the 404."""
        if value is not None:
            return responses.json_body(request, value)
        answer = await from_upstream(request)
        if answer is None:
            raise RegistryError(404, missing)
        return responses.raw_json_body(request, answer.body)

    @route("/v1/repositories/<repo:repo>/tags/<tag>", ["GET"])
    async def get_tag(request: IRequest, repo: str, tag: str) -> bytes:
        image_id = await tags.get_tag(await repository_of(request, repo), tag)
        return await local_or_upstream(request, image_id, "Tag not found")

    @route("/v1/repositories/<repo:repo>/tags/<tag>", ["PUT"])
    async def put_tag(request: IRequest, repo: str, tag: str) -> bytes:
        repository = await repository_of(request, repo)
        user_agent = _header(request, b"User-Agent") or ""
        await tags.put_tag(repository, tag, _body(request), user_agent)
        return responses.json_body(request, True)

    @route("/v1/repositories/<repo:repo>/tags/<tag>", ["DELETE"])
    async def delete_tag(request: IRequest, repo: str, tag: str) -> bytes:
        await tags.delete_tag(await repository_of(request, repo), tag)
        return responses.json_body(request, True)

    # R11, R15
    @route("/v1/repositories/<repo:repo>/tags", ["GET"])
    async def list_tags(request: IRequest, repo: str) -> bytes:
        listing = await tags.list_tags(await repository_of(request, repo))
        return await local_or_upstream(request, listing, "Repository not found")

    @route("/v1/repositories/<repo:repo>/tags", ["DELETE"])
    @route("/v1/repositories/<repo:repo>", ["DELETE"])
    async def delete_repository(request: IRequest, repo: str) -> bytes:
        await tags.delete_repository(await repository_of(request, repo))
        return responses.json_body(request, True)

    # R16
    @route("/v1/repositories/<repo:repo>/json", ["GET"])
    async def repository_json(request: IRequest, repo: str) -> bytes:
        metadata = await tags.repository_json(await repository_of(request, repo))
        if metadata is not None:
            return responses.json_body(request, metadata)
        if mirror is None:
            return responses.json_body(request, DEFAULT_METADATA)
        answer = await from_upstream(request)
        if answer is None:
            return responses.json_body(request, DEFAULT_METADATA, 404)
        return responses.raw_json_body(request, answer.body)

    # R18, R19
    @route("/v1/repositories/<repo:repo>/properties", ["PUT"])
    async def put_properties(request: IRequest, repo: str) -> bytes:
        await tags.set_access(await repository_of(request, repo), _body(request))
        return responses.json_body(request, True)

    @route("/v1/repositories/<repo:repo>/properties", ["GET"])
    async def get_properties(request: IRequest, repo: str) -> bytes:
        access = await tags.get_access(await repository_of(request, repo))
        return responses.json_body(request, {"access": access})

    if settings.standalone:
        _add_index_routes(route, registry, from_upstream)
    if registry.search is not None:
        add_search_route(route, registry.search, from_upstream if mirror else None)

    _add_error_handlers(app)
    return app


def _add_index_routes(route: Callable, registry: Registry, from_upstream: Callable) -> None:
    """R20–R25: the index a standalone registry emulates for docker 1.x."""
    settings, index = registry.settings, registry.index

    def token_headers(request: IRequest, repository: Repository, access: str) -> None:
        token = make_token(repository, access).encode()
        request.setHeader(b"X-Docker-Token", token)
        request.setHeader(b"WWW-Authenticate", token)
        request.setHeader(b"X-Docker-Endpoints", _endpoints(request, settings).encode())

    # R22b, R23, R24
    @route("/v1/repositories/<repo:repo>/images", ["PUT"])
    async def put_repository_images(request: IRequest, repo: str) -> bytes:
        repository = parse_repository(repo)
        await index.put_images(repository, _body(request))
        token_headers(request, repository, "write")
        return responses.no_content(request)

    @route("/v1/repositories/<repo:repo>/images", ["GET"])
    async def get_repository_images(request: IRequest, repo: str) -> bytes:
        repository = parse_repository(repo)
        body = await index.get_images(repository)
        if body is not None:
            token_headers(request, repository, "read")
            return responses.raw_json_body(request, body)
        answer = await from_upstream(request, index=True)
        if answer is None:
            raise RegistryError(404, "images not found")
        for name in ("X-Docker-Token", "WWW-Authenticate"):
            values = answer.headers.get(name.lower())
            if values:
                request.responseHeaders.setRawHeaders(name, list(values))
        request.setHeader(b"X-Docker-Endpoints", _endpoints(request, settings).encode())
        return responses.raw_json_body(request, answer.body)

    @route("/v1/repositories/<repo:repo>/images", ["DELETE"])
    def delete_repository_images(request: IRequest, repo: str) -> bytes:
        token_headers(request, parse_repository(repo), "delete")
        return responses.no_content(request)

    # R25
    @route("/v1/repositories/<repo:repo>/auth", ["PUT"])
    def put_repository_auth(request: IRequest, repo: str) -> bytes:
        parse_repository(repo)
        return responses.json_body(request, "OK")

    # R22a
    @route("/v1/repositories/<repo:repo>", ["PUT"])
    async def put_repository(request: IRequest, repo: str) -> bytes:
        repository = parse_repository(repo)
        await index.put_images(repository, _body(request))
        token_headers(request, repository, "write")
        return responses.json_body(request, "")

    # R20, R21
    @route("/v1/users", ["GET"])
    @route("/v1/users/", ["GET"])
    def get_users(request: IRequest) -> bytes:
        return responses.json_body(request, "OK")

    @route("/v1/users", ["POST"])
    @route("/v1/users/", ["POST"])
    def create_user(request: IRequest) -> bytes:
        try:
            parse_json(_body(request))
        except ValueError:
            raise RegistryError(400, "Error Decoding JSON") from None
        return responses.json_body(request, "User Created", 201)

    @route("/v1/users/<username>", ["PUT"])
    @route("/v1/users/<username>/", ["PUT"])
    def update_user(request: IRequest, username: str) -> bytes:
        return responses.no_content(request)


def _endpoints(request: IRequest, settings: Settings) -> str:
    """C{X-Docker-Endpoints}: the configured endpoints, else the Host header, else our address."""
    if settings.registry_endpoints:
        return settings.registry_endpoints
    host = _header(request, b"Host")
    if host:
        return host
    address = request.getHost()
    return f"{address.host}:{address.port}"


def _add_error_handlers(app: Klein) -> None:
    """One error path: every failure becomes C{{"error": ...}} with the contract's status."""

    @app.handle_errors(RegistryError)
    def registry_error(request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        return responses.json_body(request, {"error": error.message}, error.status)

    @app.handle_errors(NotFound, RequestRedirect)
    def not_found(request: IRequest, failure: Failure) -> bytes:
        return responses.json_body(request, {"error": "Not found"}, 404)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(request: IRequest, failure: Failure) -> bytes:
        allowed = set(failure.value.valid_methods or ()) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode())
        if request.method == b"OPTIONS":
            responses.set_json_headers(request, 200, 0)
            return b""
        return responses.json_body(request, {"error": "Method not allowed"}, 405)

    @app.handle_errors(defer.CancelledError)
    def cancelled(request: IRequest, failure: Failure) -> None:
        """The client went away; there is nobody to answer."""

    @app.handle_errors(Exception)
    def internal_error(request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error on {method} {uri}", failure,
                    method=request.method, uri=request.uri)
        return responses.json_body(request, {"error": "Internal server error"}, 500)
