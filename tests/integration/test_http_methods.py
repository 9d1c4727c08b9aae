"""Methods of the API's paths: HEAD wherever GET is (monitors probe with it), and a 405 that names
every method its path takes, in the API and the web UI."""

from __future__ import annotations

import pytest

from tests.conftest import Api


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/v2/usersessions", "/api/v2/settings/schemas"])
async def test_head_is_answered_as_get_without_the_body(api: Api, path: str) -> None:
    headers = api.auth(await api.token())
    got = await api.client.get(path, headers=headers)
    head = await api.client.head(path, headers=headers)
    assert (head.status_code, got.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


async def test_head_needs_the_token_its_get_needs(api: Api) -> None:
    assert (await api.client.head("/api/v2/usersessions")).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v2/usersessions", "GET, HEAD, POST"),
        ("PATCH", "/api/v2/settings/objects/x", "DELETE, GET, HEAD, PUT"),
        ("DELETE", "/api/v2/settings/objects", "GET, HEAD, POST"),
        ("POST", "/health", "GET, HEAD"),
    ],
)
async def test_a_refused_method_is_told_every_method_of_its_path(
    api: Api, method: str, path: str, allowed: str
) -> None:
    response = await api.client.request(method, path, headers=api.auth(await api.token()))
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


async def test_the_ui_says_what_a_path_takes_when_it_refuses_a_method(api: Api) -> None:
    response = await api.client.put("/ui/login", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
