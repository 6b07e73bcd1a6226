"""``/docs`` renders in a real headless Chromium, offline: every operation listed, no CDN.

The service runs on a loopback socket (``sdk_support.ServiceServer``); Chromium
(the OS package, ``tests/chromium.py``) loads ``/docs``, and the test waits until
Swagger UI has rendered the document, then reads the DOM and takes a screenshot.
Every request the page made must have gone to the service itself: nothing from a
CDN, so the page works without internet and tells no third party who reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chromium import headless_page, png_distinct_bytes, png_size
from sdk_support import ServiceServer
from support import settings_for

from entitlements.api.docs import ASSETS, SWAGGER_CSS, SWAGGER_JS


@pytest.fixture(scope="module")
def server(pg_dsn: str) -> Iterator[ServiceServer]:
    s = ServiceServer(settings_for(pg_dsn))
    s.start()
    try:
        yield s
    finally:
        s.close()


def test_docs_pages_name_only_local_assets(server: ServiceServer) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f"{ASSETS}/{SWAGGER_JS}" in page.text and f"{ASSETS}/{SWAGGER_CSS}" in page.text
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        redoc = http.get("/redoc")
        assert redoc.status_code == 200 and "https://" not in redoc.text
        js = http.get(f"{ASSETS}/{SWAGGER_JS}")
        assert js.status_code == 200 and len(js.content) > 100_000
        assert http.get(f"{ASSETS}/{SWAGGER_CSS}").status_code == 200
        assert http.get(f"{ASSETS}/../docs.py").status_code == 404
        assert http.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_docs_render_every_operation_in_headless_chromium(
    server: ServiceServer, tmp_path: Path
) -> None:
    document = httpx.get(f"{server.url}/openapi.json", trust_env=False, timeout=10).json()
    operations = {
        (method.upper(), path, op["operationId"])
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert len(operations) >= 15

    with headless_page() as page:
        page.send("Page.navigate", url=f"{server.url}/docs")
        count = page.wait_for(
            f"document.querySelectorAll('.opblock').length >= {len(operations)}"
            " && document.querySelectorAll('.opblock').length",
            timeout=60,
        )
        shown = page.evaluate(
            """Array.from(document.querySelectorAll('.opblock')).map(b => [
                 (b.querySelector('.opblock-summary-method') || {}).textContent,
                 (b.querySelector('.opblock-summary-path') || {}).getAttribute
                   ? b.querySelector('.opblock-summary-path').getAttribute('data-path') : null,
                 b.id])"""
        )
        title = page.evaluate("document.querySelector('.info .title').textContent")
        errors = page.evaluate("document.querySelectorAll('.errors-wrapper').length")
        png = page.screenshot()
        urls = page.requested_urls()

    (tmp_path / "docs.png").write_bytes(png)
    assert count == len(operations)
    assert "entitlements" in title
    assert errors == 0  # Swagger UI read the 3.1 document without complaint
    assert {(m, p) for m, p, _ in shown} == {(m, p) for m, p, _ in operations}
    ids = [block_id for _, _, block_id in shown]
    for _, path, operation_id in operations:  # Swagger UI's ids: operations-<tag>-<operationId>
        assert any(i.endswith(f"-{operation_id}") for i in ids), (operation_id, path)

    local = (server.url, "data:", "blob:", "about:")
    assert urls and all(u.startswith(local) for u in urls), [
        u for u in urls if not u.startswith(local)
    ]
    assert any(u.endswith(f"{ASSETS}/{SWAGGER_JS}") for u in urls)

    assert png_size(png) == (1280, 900)
    assert png_distinct_bytes(png) > 64, "the screenshot is blank"
