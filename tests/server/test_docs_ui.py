"""/docs works air-gapped: the page loads swagger-ui from this server, pinned with the Python dependencies."""

from __future__ import annotations

import re


async def test_the_docs_page_loads_only_assets_this_server_serves(client):
    page = await client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and not [url for url in assets if "//" in url], assets  # nothing from a CDN or another host
    for url in assets:
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 1000, url
    types = {url.rsplit(".", 1)[-1]: (await client.get(url)).headers["content-type"] for url in assets}
    assert types["css"].startswith("text/css") and "javascript" in types["js"]
