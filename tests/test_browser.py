"""The gallery and the live dashboard in a real browser: Debian's chromium, headless,
driven by Playwright (never a downloaded browser build). Skipped only outside CI
when chromium is missing; in CI (CI=true) a missing browser fails."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lumasched import cli
from tests import _cli_fixtures as fx
from tests._cli_fixtures import MIXED_ITEMS, ThreadedEmulator, write_jsonl

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Browser:
    """One headless chromium page that records every console error, page error
    and failed request."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Any) -> None:
        # ERR_ABORTED is the page's own doing, not a failure: a browser stops fetching
        # a video once it has what it needs (metadata, enough to play), and the
        # dashboard closes its event stream itself when the final numbers arrive,
        # which may be before the server has ended the response. A server that breaks
        # a response shows another error (refused, reset, incomplete chunked body).
        if request.resource_type in ("media", "eventsource") and "ERR_ABORTED" in str(
            request.failure
        ):
            return
        self.errors.append(f"request failed: {request.url} {request.failure}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[], Browser]]:
    """Opens the browser when called: Playwright's sync API runs an event loop of its
    own, so the test's own runs (asyncio.run) happen before."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if CHROMIUM is None:
        missing = "chromium is not installed (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {missing}; .ci/run installs it")
        pytest.skip(missing)
    with contextlib.ExitStack() as stack:

        def launch() -> Browser:
            playwright = stack.enter_context(sync_playwright())
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                args=ARGS,
                viewport={"width": 1280, "height": 900},
            )
            stack.callback(context.close)
            return Browser(context)

        yield launch


def test_gallery_in_a_browser(
    browser: Callable[[], Browser], cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """Every thumbnail and poster of a real run's gallery loads, videos play, the
    filters show what they say, and the console stays clean."""
    failing = {"id": "bad", "model": "photon-1", "prompt": "a fox fail:blacklisted"}
    manifest = write_jsonl(tmp_path / "shots.jsonl", [*MIXED_ITEMS, failing])
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
    assert cli.main([*args, "--no-progress"]) == 1  # one item failed
    shown = browser()
    page = shown.page
    page.goto((out / "index.html").as_uri())

    cards = page.locator("article.card")
    assert cards.count() == len(MIXED_ITEMS) + 1
    assert cards.first.get_attribute("id") == "item-bad"
    images = page.locator("article.card img")
    assert images.count() == 2
    for index in range(images.count()):
        image = images.nth(index)
        image.scroll_into_view_if_needed()  # lazy: loads once near the view
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
    videos = page.locator("article.card video")
    assert videos.count() == 4
    for index in range(videos.count()):
        video = videos.nth(index)
        poster = video.get_attribute("poster")
        assert poster, "every video has a poster frame"
        size = page.evaluate(
            """src => new Promise((ok, bad) => { const i = new Image();
                 i.onload = () => ok(i.naturalWidth); i.onerror = bad; i.src = src; })""",
            poster,
        )
        assert size > 0
    duration = page.evaluate(
        """v => new Promise(ok => { v.addEventListener("loadedmetadata", () => ok(v.duration));
             v.preload = "metadata"; v.load(); })""",
        videos.first.element_handle(),
    )
    assert duration > 0, "the video file itself plays"

    page.click('button[data-filter="state"][data-value="failed"]')
    assert _visible_ids(page) == ["bad"]
    assert page.text_content("#shown-count") == "1"
    page.click('button[data-filter="state"][data-value="failed"]')
    page.click('button[data-filter="family"][data-value="video"]')
    assert set(_visible_ids(page)) == {"sea", "bear", "bear-2", "bear-hd"}
    assert page.locator("section.chain").is_visible()
    page.click('button[data-filter="family"][data-value="video"]')
    assert len(_visible_ids(page)) == len(MIXED_ITEMS) + 1

    assert page.locator("#report svg.chart").count() >= 4
    assert shown.errors == []


def _visible_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "article.card", "cards => cards.filter(c => !c.hidden).map(c => c.id.slice(5))"
    )
    return ids


SLOW_LIMITS = """\
[video]
concurrency = 2
requests = 3
per_seconds = 1.0

[image]
concurrency = 3
requests = 4
per_seconds = 1.0
"""


def test_dashboard_in_a_browser(browser: Callable[[], Browser], tmp_path: Path) -> None:
    """`lumasched run --dashboard 0`: the page connects while the run goes, its
    numbers move, thumbnails of the newest results appear, no console error."""
    items: list[dict[str, Any]] = [
        {"id": f"img-{n:02d}", "model": "photon-flash-1", "prompt": f"a harbour, take {n}"}
        for n in range(16)
    ]
    items += [
        {"id": f"vid-{n}", "model": "ray-flash-2", "prompt": f"a valley, take {n}"}
        for n in range(4)
    ]
    manifest = write_jsonl(tmp_path / "shots.jsonl", items)
    limits = tmp_path / "limits.toml"
    limits.write_text(SLOW_LIMITS)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMAAI_", "LUMASCHED_"))}
    command = [
        sys.executable,
        "-c",
        "import sys; from lumasched.cli import main; sys.exit(main())",
        "run",
        str(manifest),
        "--out",
        str(out),
        "--emulator",
        "--emulator-speed",
        "200",
        "--limits",
        str(limits),
        "--no-progress",
        "--dashboard",
        "0",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as run:
        assert run.stdout is not None
        url = None
        seen = []
        for line in run.stdout:
            seen.append(line)
            found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(seen)
        shown = browser()
        page = shown.page
        page.goto(url)
        page.wait_for_selector("#family-image")
        first = int(page.text_content("#creates") or "0")
        page.wait_for_function(
            f"Number(document.getElementById('creates').textContent) > {first}",
            timeout=20_000,
        )
        page.wait_for_function(
            "Number(document.querySelector('#family-image .done').textContent) > 0",
            timeout=20_000,
        )
        page.wait_for_function(
            "[...document.querySelectorAll('#newest img')]"
            ".some(i => i.complete && i.naturalWidth > 0)",
            timeout=20_000,
        )
        assert page.locator("#chart-held polyline").count() >= 1
        assert page.locator("#live.on").count() == 1
        rest = run.stdout.read()
        assert run.wait(timeout=60) == 0, "".join(seen) + rest
        # The run's last numbers arrive marked final: the page stops listening.
        page.wait_for_function("document.getElementById('state').textContent === 'run ended'")
        assert page.text_content("#family-image .done") == "16"
        assert page.text_content("#remaining") == "0"
        page.wait_for_timeout(1500)  # a page that tried to reconnect would log an error by now
        assert shown.errors == []
