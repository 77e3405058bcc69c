# -*- test-case-name: tests.test_routes_repositories -*-
"""The repository routes, R11–R19: tags, repository json, deletion and visibility."""

from __future__ import annotations

from twistreg.registry.auth import Access
from twistreg.registry.mirror import Mirror
from twistreg.registry.tags import DEFAULT_METADATA
from twistreg.web import responses
from twistreg.web.v1.routes import Missing, Policy, RouteCall, RouteTable, upstream_request

_REPOSITORY = "/v1/repositories/<repo:repo>"


async def passed_through(call: RouteCall, mirror: Mirror, **arguments: str) -> bytes | None:
    """R11/R12/R16 in mirror mode: upstream's body as it is, nothing stored."""
    path, headers = upstream_request(call.request)
    answer = await mirror.fetch(path, headers)
    return None if answer is None else responses.raw_json_body(call.request, answer.body)


async def _upstream_metadata(call: RouteCall, mirror: Mirror, **arguments: str) -> bytes:
    """R16 in mirror mode: upstream's json; when it fails, 404 with the default object."""
    answer = await passed_through(call, mirror)
    if answer is None:
        return responses.json_body(call.request, DEFAULT_METADATA, 404)
    return answer


def add_repository_routes(v1: RouteTable) -> None:
    """R11–R19; the V2 tags of a repository are its V1 tags too (L{V2View})."""
    tags = v1.registry.tags
    v2_view, tag_space = v1.registry.v2_view, v1.registry.tag_space

    @v1.route(_REPOSITORY + "/tags/<tag>/json", "GET", Policy(Access.READ))
    async def get_tag_json(call: RouteCall, tag: str) -> bytes:
        metadata = await tags.tag_json(call.repository, tag)
        return responses.json_body(call.request,
                                   DEFAULT_METADATA if metadata is None else metadata)

    @v1.route(_REPOSITORY + "/tags/<tag>", "GET", Policy(Access.READ, mirror=passed_through))
    async def get_tag(call: RouteCall, tag: str) -> bytes:
        image_id = await tags.get_tag(call.repository, tag)
        if image_id is None and v2_view is not None:
            image_id = await v2_view.tag(call.repository, tag)
        if image_id is None:
            raise Missing("Tag not found")
        return responses.json_body(call.request, image_id)

    @v1.route(_REPOSITORY + "/tags/<tag>", "PUT", Policy(Access.WRITE))
    async def put_tag(call: RouteCall, tag: str) -> bytes:
        await tags.put_tag(call.repository, tag, call.body(), call.header(b"User-Agent") or "")
        return responses.json_body(call.request, True)

    @v1.route(_REPOSITORY + "/tags/<tag>", "DELETE", Policy(Access.DELETE))
    async def delete_tag(call: RouteCall, tag: str) -> bytes:
        # One namespace: the tag goes from both trees (both have it only after a race).
        pushed = tag_space is not None and await tag_space.take_from_v2(call.repository, tag)
        if not pushed or await tags.get_tag(call.repository, tag) is not None:
            await tags.delete_tag(call.repository, tag)
        return responses.json_body(call.request, True)

    @v1.route(_REPOSITORY + "/tags", "GET", Policy(Access.READ, mirror=passed_through))
    async def list_tags(call: RouteCall) -> bytes:
        listing = await tags.list_tags(call.repository)
        if v2_view is not None:
            pushed = await v2_view.tags(call.repository)
            if pushed is not None:
                # Both trees have the tag only after pushes raced: V1's is served here.
                listing = {**pushed, **(listing or {})}
        if listing is None:
            raise Missing("Repository not found")
        return responses.json_body(call.request, listing)

    @v1.route((_REPOSITORY, _REPOSITORY + "/tags"), "DELETE", Policy(Access.DELETE))
    async def delete_repository(call: RouteCall) -> bytes:
        # One namespace: the repository's V2 tags go too, or the V1 view would keep them.
        pushed = tag_space is not None and await tag_space.take_all_from_v2(call.repository)
        if not pushed or await tags.list_tags(call.repository) is not None:
            await tags.delete_repository(call.repository)
        return responses.json_body(call.request, True)

    @v1.route(_REPOSITORY + "/json", "GET", Policy(Access.READ, mirror=_upstream_metadata))
    async def repository_json(call: RouteCall) -> bytes:
        metadata = await tags.repository_json(call.repository)
        if metadata is None:
            if v1.registry.mirror is not None:
                raise Missing("Repository not found")
            metadata = DEFAULT_METADATA
        return responses.json_body(call.request, metadata)

    @v1.route(_REPOSITORY + "/properties", "PUT", Policy(Access.WRITE))
    async def put_properties(call: RouteCall) -> bytes:
        await tags.set_access(call.repository, call.body())
        return responses.json_body(call.request, True)

    @v1.route(_REPOSITORY + "/properties", "GET", Policy(Access.READ))
    async def get_properties(call: RouteCall) -> bytes:
        access = await tags.get_access(call.repository)
        return responses.json_body(call.request, {"access": access})
