"""/docs and /redoc load everything from the gateway itself: they work without internet."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"]),
        ("/redoc", ["/docs-assets/redoc.standalone.js"]),
    ],
)
async def test_a_docs_page_loads_its_assets_from_the_gateway(
    client: httpx.AsyncClient, page: str, assets: list[str]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # Nothing from another origin: every src/href is a path on this gateway.
    external = re.findall(r"""(?:src|href)=["']?(https?://[^"' >]+)""", html)
    assert external == [], external
    assert "/openapi.json" in html
    for asset in assets:
        assert asset in html
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 100_000  # the real bundle, not a stub


async def test_the_assets_are_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if "docs" in path or "redoc" in path]
