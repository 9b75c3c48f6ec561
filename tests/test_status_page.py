"""The status page in a real headless Chromium (Playwright): it loads from the service alone,
the chart draws the bars the service built and follows live ones over the WebSocket server, a
gap and its repair show on the timeline, and a wrong key is refused."""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from fakes.binance import FakeBinance
from fakes.server import free_port
from streamer.monitor import PAGE_FILES
from tests.conftest import RunningService, eventually, fake_settings

USER, KEY = "trader", "s3cret-key"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (.ci/run installs it), driven by Playwright."""
    executable = shutil.which("chromium")
    assert executable, "chromium is needed: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable,
                                                    args=["--no-sandbox"])  # fmt: skip
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Browser, http_port: int, requests: list[str]) -> Page:
    page = await browser.new_page()
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(f"http://127.0.0.1:{http_port}/")
    await page.wait_for_function("window.streamerPage && window.streamerPage.ready")
    return page


async def show_chart(page: Page, key: str) -> None:
    await page.select_option("#interval", "1m")
    await page.fill("#user", USER)
    await page.fill("#key", key)
    await page.click("button[type=submit]")


async def value(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)


async def test_the_page_charts_the_services_bars_and_shows_gaps_and_repairs(
    browser: Browser,
) -> None:
    now = (int(time.time() * 1000) // 60_000 - 30) * 60_000  # half an hour ago
    http_port, ws_port = free_port(), free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, http_port=http_port, websocket_port=ws_port, exchange_symbols=["BTCUSDT"],
            enabled_consumers=["collect", "websocket"], wss_auth_user=USER, wss_auth_key=KEY,
            aggregator_repair_delay_ms=0,
        )  # fmt: skip
        async with RunningService(settings) as running:
            for minute in range(5):  # five closed bars, one trade each
                await fake.trade("BTCUSDT", str(100 + minute), "1", now + minute * 60_000)
            await fake.trade("BTCUSDT", "110", "1", now + 5 * 60_000)  # closes minute 4
            await eventually(lambda: len(running.collector.klines()) >= 5)
            requests: list[str] = []
            page = await open_page(browser, http_port, requests)
            await show_chart(page, KEY)
            await page.wait_for_function("window.streamerPage.auth === 'authenticated'")
            latest = {k.timestamp: k for k in running.collector.klines() if k.interval == "1m"}
            built = [latest[t] for t in sorted(latest)]  # each bar's newest revision
            assert await value(page, "window.streamerPage.bars") == len(built)
            assert await value(page, "window.streamerPage.lastBar.close") == float(built[-1].close)
            assert await page.locator("#chart canvas").count() > 0  # drawn
            # Live: a new minute closes the forming one; the chart gets it over the WebSocket.
            await fake.trade("BTCUSDT", "111", "1", now + 6 * 60_000)
            await page.wait_for_function(f"window.streamerPage.bars === {len(built) + 1}")
            # A lost trade: a gap, then the repair from the exchange's klines, on the timeline.
            await fake.trade("BTCUSDT", "112", "1", now + 7 * 60_000 + 10, deliver=False)
            await fake.trade("BTCUSDT", "113", "1", now + 7 * 60_000 + 20)
            await fake.trade("BTCUSDT", "114", "1", now + 8 * 60_000)
            timeline = page.locator("#timeline")
            await timeline.locator("li.gap").first.wait_for(timeout=15_000)
            await timeline.locator("li.repaired").first.wait_for(timeout=15_000)
            assert await page.locator("#connections td").first.text_content() == ("binance-spot-0")
            assert "ok" in (await page.locator("#status").text_content() or "")
            await page.close()
    # Nothing but the service itself: the page, its files, the API and the WebSocket server.
    assert requests
    assert all(url.startswith(f"http://127.0.0.1:{http_port}/") for url in requests), requests


async def test_a_wrong_key_is_refused(browser: Browser) -> None:
    http_port, ws_port = free_port(), free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, http_port=http_port, websocket_port=ws_port, exchange_symbols=["BTCUSDT"],
            enabled_consumers=["collect", "websocket"], wss_auth_user=USER, wss_auth_key=KEY,
        )  # fmt: skip
        async with RunningService(settings):
            page = await open_page(browser, http_port, [])
            await show_chart(page, "not-the-key")
            await page.wait_for_function("window.streamerPage.auth === 'refused'")
            assert "refused" in (await page.locator("#live").text_content() or "")


def test_the_page_and_its_files_are_in_the_package() -> None:
    """Served from the installed package (no build step); only the listed files are served."""
    from importlib import resources

    web = resources.files("streamer").joinpath("web")
    for name in PAGE_FILES:
        assert web.joinpath(*name.split("/")).is_file(), name


async def test_a_file_not_listed_is_not_served() -> None:
    http_port = free_port()
    async with FakeBinance() as fake, RunningService(fake_settings(fake, http_port=http_port)):
        for path in ("/static/../settings.py", "/static/vendor/README.md", "/static/nothing.js"):
            with pytest.raises(urllib.error.HTTPError) as error:
                await _get(f"http://127.0.0.1:{http_port}{path}")
            error.value.close()  # its connection, else the server waits for it at shutdown
            assert error.value.code == 404


async def _get(url: str) -> bytes:
    import asyncio

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bytes(reply.read())

    return await asyncio.to_thread(fetch)
