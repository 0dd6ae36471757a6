"""The app in headless Chromium: type, generate, watch text stream, move the slider."""

import shutil
import time
from pathlib import Path

import pytest

from dera_demo.service import CUSTOM_PAIR, Backend
from dera_demo.testing import CHROMIUM_FLAGS
from dera_demo.ui import build_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


class SlowBackend(Backend):
    """The real engine on the tiny pair, slowed down so that streaming is visible."""

    def run(self, *args, **kwargs):
        for view in super().run(*args, **{**kwargs, "min_interval_s": 0.0}):
            time.sleep(0.04)
            yield view


@pytest.fixture()
def page(tiny_pair):
    playwright_api = pytest.importorskip("playwright.sync_api")
    backend = SlowBackend(
        CUSTOM_PAIR, precision="none", custom=(str(tiny_pair.ref_dir), str(tiny_pair.aligned_dir))
    )
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(url)
        yield page
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-test.png"), full_page=True)
        browser.close()
    demo.close()


def response_text(page):
    return page.locator("#response textarea").input_value()


def wait_until_done(page, timeout_s=30.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if "Done" in page.locator("#stats").inner_text():
            return
        time.sleep(0.1)
    raise AssertionError("generation did not finish")


def test_typing_generating_streaming_and_sliding_in_a_browser(page):
    page.locator("#prompt textarea").fill("Bake the bread for forty minutes")
    page.locator("#generate").click()

    seen = []
    deadline = time.time() + 30
    while time.time() < deadline and "Done" not in page.locator("#stats").inner_text():
        text = response_text(page)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.05)
    wait_until_done(page)
    first_answer = response_text(page)
    assert len(seen) >= 3, f"text did not stream in: {seen}"
    assert all(first_answer.startswith(s) or len(s) > len(first_answer) for s in seen[:-1])

    # Releasing the slider while nothing runs regenerates from the same seed at the new strength.
    slider = page.locator("#strength input[type=range]")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)
    deadline = time.time() + 30
    while time.time() < deadline and response_text(page) in ("", first_answer):
        time.sleep(0.1)
    wait_until_done(page)
    assert response_text(page) != first_answer
    assert float(page.locator("#strength input[type=number]").input_value()) < 0.2
    assert page.locator("#tokens").inner_text().strip()
