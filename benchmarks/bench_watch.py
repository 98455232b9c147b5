"""`pagedkv watch` on its default run: time to write the page, its size, the browser's time to first
frame, the cost of drawing one frame and the frame rate of playback; and the GIF.

    python benchmarks/bench_watch.py [--repeat 3]

1. ``pagedkv watch`` with its defaults (1,000 requests, naive and paged, 600 frames), timed as a fresh
   process (interpreter start and imports included), and the page's size.
2. The page in headless Debian chromium (Playwright, /usr/bin/chromium): time to first frame (ms from
   navigation start until the first frame is drawn, `window.pagedkvWatch.firstFrameMs`), the mean time to
   draw one frame (seeking through all 600), and the frames per second reached while playing at the
   fastest speed (60 fps asked; frames actually drawn). Skipped, saying so, without chromium.
3. ``--gif``: the extra time and the GIF's size.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PAGEDKV = Path(sys.executable).with_name("pagedkv")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_write(folder: Path, repeat: int) -> Path:
    page = folder / "watch.html"
    times = [timed([str(PAGEDKV), "watch", "--out", str(page)]) for _ in range(repeat)]
    print(
        f"pagedkv watch (defaults): {statistics.median(times):.2f} s median of {repeat} "
        f"(min {min(times):.2f} s); page {page.stat().st_size / 1e6:.2f} MB"
    )
    return page


def bench_gif(folder: Path, repeat: int) -> None:
    page, film = folder / "with-gif.html", folder / "watch.gif"
    times = [timed([str(PAGEDKV), "watch", "--out", str(page), "--gif", str(film)]) for _ in range(repeat)]
    print(
        f"pagedkv watch --gif: {statistics.median(times):.2f} s median of {repeat}; "
        f"GIF {film.stat().st_size / 1e6:.2f} MB"
    )


def bench_browser(page_path: Path, repeat: int) -> None:
    if not CHROMIUM.exists():
        print("browser: skipped, /usr/bin/chromium is not installed (make test installs it)")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        first, draw, fps = [], [], []
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_path.as_uri())
            page.wait_for_function("window.pagedkvWatch && window.pagedkvWatch.ready", timeout=60_000)
            first.append(page.evaluate("window.pagedkvWatch.firstFrameMs"))
            draw.append(
                page.evaluate(
                    """() => {
                        const api = window.pagedkvWatch, start = performance.now();
                        for (let i = 0; i < api.frames; i++) api.seek(i);
                        return (performance.now() - start) / api.frames;
                    }"""
                )
            )
            page.evaluate("window.pagedkvWatch.seek(0)")
            page.select_option("#speed", "60")
            drawn = page.evaluate("window.pagedkvWatch.renders")
            page.locator("#play").click()
            start = time.perf_counter()
            page.wait_for_timeout(4000)
            drawn = page.evaluate("window.pagedkvWatch.renders") - drawn
            fps.append(drawn / (time.perf_counter() - start))
            page.close()
        browser.close()
    print(
        f"browser (chromium {CHROMIUM}): first frame {statistics.median(first):.0f} ms after navigation "
        f"(median of {repeat}, min {min(first):.0f}); drawing one frame {statistics.median(draw):.1f} ms "
        f"(all frames, seek by seek); playback {statistics.median(fps):.0f} frames drawn/s "
        "at the 60 fps setting"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        page = bench_write(Path(folder), args.repeat)
        bench_browser(page, args.repeat)
        bench_gif(Path(folder), args.repeat)


if __name__ == "__main__":
    main()
