"""The Dagster UI in a real browser, on the demo's output.

`make demo` runs in a subprocess (it sets the code location's configuration and
DAGSTER_HOME in its own environment), the Dagster webserver serves that instance on
127.0.0.1, and Debian's Chromium, driven by Playwright, opens the asset page of
``scene_products`` and of ``daily_aoi_stats`` for the demo partition. It checks what a
person would look at: the quicklooks and the NDVI history chart of the materialization
metadata render as pictures, and every asset check evaluation names the partition it
checked. Full-page screenshots are kept under ``.test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from geospatial_pipeline.local.ports import LOOPBACK, free_port, wait_for_http
from tests.conftest import REPO, in_ci

# Debian's package by default; elsewhere (a CI image) point this at a Chromium binary.
CHROMIUM = Path(os.environ.get("GEOSPATIAL_PIPELINE_CHROMIUM") or "/usr/bin/chromium")
ARTIFACTS = REPO / ".test-artifacts" / "browser"
ASSET = "scene_products"
STATS_ASSET = "daily_aoi_stats"
PARTITION = "toulouse-centre|2024-06-15"
OTHER_PARTITION = "blagnac|2024-06-15"
# Generous: the demo itself takes ~40 s on an idle machine and the whole suite runs in
# parallel with other work in CI.
DEMO_TIMEOUT_S = 240
UI_TIMEOUT_S = 90
# Playwright waits, in milliseconds: the UI loads its data through GraphQL after the page.
WAIT_MS = 45_000

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if in_ci():
        # A skip would let CI pass without ever opening the UI.
        pytest.fail(
            f"{CHROMIUM} not found; CI=true forbids skipping the browser test "
            "(set GEOSPATIAL_PIPELINE_CHROMIUM to the runner's Chromium)",
            pytrace=False,
        )
    pytest.skip(
        f"{CHROMIUM} not found (apt-get install chromium, or set GEOSPATIAL_PIPELINE_CHROMIUM)"
    )


@dataclass(frozen=True)
class DemoUI:
    url: str
    out: Path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUI]:
    _require_chromium()
    out = tmp_path_factory.mktemp("browser-demo")
    demo = subprocess.run(
        [sys.executable, "-m", "geospatial_pipeline.demo", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert demo.returncode == 0, f"make demo failed:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    port = free_port()
    env = {
        **os.environ,
        "GEOSPATIAL_PIPELINE_CONFIG": str(out / "pipeline.yaml"),
        "DAGSTER_HOME": str(out / "dagster_home"),
    }
    log = (out / "webserver.log").open("wb")
    webserver = Path(sys.executable).parent / "dagster-webserver"
    cmd = [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", LOOPBACK, "-p", str(port)]
    # Its own process group: the webserver starts a code server of its own.
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_for_http(f"{url}/server_info", UI_TIMEOUT_S, is_alive=lambda: proc.poll() is None)
        # A fresh instance greets its first visitor with a "join the community" dialog
        # that covers the page; dismiss it as its Skip button would, on the server.
        assert _graphql(url, "mutation { setNuxSeen }")["setNuxSeen"] is True
        yield DemoUI(url=url, out=out)
    finally:
        _stop(proc)
        log.close()


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    # The UI listens on loopback; never route through an HTTP(S)_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


CHECKS_QUERY = """
query Checks($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } }
  }
}
"""


def _check_names(url: str) -> list[str]:
    data = _graphql(url, CHECKS_QUERY, {"path": [ASSET]})
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    return sorted(c["name"] for c in checks)


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """Playwright's browser on the system Chromium: the tests never download a browser."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser(demo_ui: DemoUI) -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


def _screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _table_rows(page: Any) -> list[dict[str, str]]:
    """The UI's tables on the page as rows keyed by their header cells."""
    tables: list[list[list[str]]] = page.evaluate(
        """() => [...document.querySelectorAll('table')].map(t =>
            [...t.querySelectorAll('tr')].map(r =>
                [...r.querySelectorAll('th,td')].map(c => c.innerText.trim())))"""
    )
    rows: list[dict[str, str]] = []
    for table in tables:
        if not table:
            continue
        header, *body = table
        rows.extend(dict(zip(header, row, strict=False)) for row in body if row)
    return rows


def _partition_page(page: Any, url: str, asset: str) -> None:
    page.goto(f"{url}/assets/{asset}?view=partitions&partition={quote(PARTITION, safe='')}")


def _dialog_images(page: Any) -> list[dict[str, Any]]:
    """The pictures of the open markdown dialog, once the browser has decoded them."""
    dialog = page.get_by_role("dialog")
    dialog.locator("img").last.wait_for(timeout=WAIT_MS)
    # Decoded pictures, not broken-image icons: the data URIs survived the UI's
    # markdown sanitizer and are valid PNGs.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=dialog] img')].every(i => i.complete)",
        timeout=WAIT_MS,
    )
    images: list[dict[str, Any]] = dialog.locator("img").evaluate_all(
        "els => els.map(i => ({src: i.src.slice(0, 22), w: i.naturalWidth,"
        " h: i.naturalHeight, complete: i.complete}))"
    )
    return images


def test_asset_page_renders_quicklooks(demo_ui: DemoUI, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        _partition_page(page, demo_ui.url, ASSET)
        # The partition's own materialization, not the latest one of any partition.
        page.get_by_text(f"{PARTITION.split('|')[0]}: 1 scene(s)").first.wait_for(timeout=WAIT_MS)
        _screenshot(page, "asset-page")
        row = page.locator("tr", has=page.get_by_text("quicklooks", exact=True))
        row.get_by_text("Show Markdown").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("thumbnail").first.wait_for(timeout=WAIT_MS)
        images = _dialog_images(page)
        path = _screenshot(page, "asset-page-quicklooks")
    finally:
        page.close()
    rendered = [i for i in images if i["complete"] and i["w"] > 0 and i["h"] > 0]
    assert len(rendered) >= 2, images
    assert all(i["src"].startswith("data:image/png") for i in rendered), images
    assert path.stat().st_size > 10_000


def test_asset_page_renders_ndvi_history(demo_ui: DemoUI, browser: Any) -> None:
    aoi = PARTITION.split("|")[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        _partition_page(page, demo_ui.url, STATS_ASSET)
        # The partition's own materialization: its scene count names only its AOI.
        page.get_by_text(re.compile(rf"^{re.escape(aoi)}: \d+ scenes?$")).first.wait_for(
            timeout=WAIT_MS
        )
        row = page.locator("tr", has=page.get_by_text("ndvi_history", exact=True))
        row.get_by_text("Show Markdown").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(f"{aoi}: NDVI and pixel fractions").first.wait_for(timeout=WAIT_MS)
        images = _dialog_images(page)
        path = _screenshot(page, "asset-page-ndvi-history")
    finally:
        page.close()
    assert len(images) == 1, images
    chart = images[0]
    assert chart["complete"] and chart["src"].startswith("data:image/png"), chart
    # A chart, not a placeholder pixel: landscape, at least a few hundred px wide.
    assert chart["w"] >= 300 and chart["w"] > chart["h"] > 0, chart
    assert path.stat().st_size > 10_000


def test_check_evaluations_name_their_partition(demo_ui: DemoUI, browser: Any) -> None:
    names = _check_names(demo_ui.url)
    assert len(names) >= 2, names
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen: dict[str, list[str]] = {}
    try:
        for name in names:
            page.goto(f"{demo_ui.url}/assets/{ASSET}?view=checks&checkDetail={name}")
            page.get_by_text("Execution history", exact=True).first.click(timeout=WAIT_MS)
            # Both demo partitions ran every check once.
            page.get_by_role("cell", name=PARTITION, exact=True).wait_for(timeout=WAIT_MS)
            page.get_by_role("cell", name=OTHER_PARTITION, exact=True).wait_for(timeout=WAIT_MS)
            rows = [r for r in _table_rows(page) if "Evaluation result" in r]
            seen[name] = [r.get("Partition", "") for r in rows]
            if name == names[0]:
                _screenshot(page, "asset-checks")
    finally:
        page.close()
    for name, partitions in seen.items():
        # Each evaluation names its partition: no "-" placeholder, no blank cell.
        assert sorted(partitions) == sorted([OTHER_PARTITION, PARTITION]), (name, partitions)


def test_artifacts_directory_is_ignored() -> None:
    """The screenshots stay out of commits (they change on every run)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    probe = ARTIFACTS / "asset-page.png"
    result = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=REPO, capture_output=True, check=False
    )
    assert result.returncode == 0, f"{probe} is not git-ignored"
