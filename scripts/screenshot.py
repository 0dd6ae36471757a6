"""Take the README's screenshot: the app on the embedded pair, after a live run and a comparison.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png]

Needs Debian's chromium and the playwright package (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright

from dera_demo.service import Backend
from dera_demo.testing import CHROMIUM_FLAGS
from dera_demo.ui import build_app

PROMPT = "What should I bring on a day hike?"


def wait_for_done(page, selector: str, timeout_s: float = 300.0) -> None:
    deadline = time.time() + timeout_s
    while "Done" not in page.locator(selector).inner_text():
        if time.time() > deadline:
            raise TimeoutError(f"{selector} did not finish")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/screenshot.png"))
    parser.add_argument("--precision", default="none")
    args = parser.parse_args()
    backend = Backend(precision=args.precision)
    backend.pair()
    demo = build_app(backend)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.goto(url)
        page.locator("#prompt textarea").fill(PROMPT)
        page.locator("#strength input[type=number]").fill("1")
        page.locator("#generate").click()
        wait_for_done(page, "#stats")
        page.get_by_role("tab", name="Side by side").click()
        page.locator("#compare").click()
        wait_for_done(page, "#compare-stats")
        page.get_by_role("tab", name="Live λ").click()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
