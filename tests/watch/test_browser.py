"""The page in a real browser: Debian's chromium, headless, driven by Playwright.

Each check reads what a person sees (text on the page, pixels of the grid's canvas) and compares it with
a separate run of the simulator (`watch_truth`): the numbers after seeking to a step, the colour of every
block, row and Orca unit, the block table shown on a click, the clock moving on play; and that the
page loads with no console error. `make test` installs chromium (see the Makefile) and Playwright (the
`dev` extra); these tests skip, saying why, only where either is missing. The screenshot in docs/ comes
from `test_screenshot` (set PAGEDKV_WATCH_SCREENSHOT=docs/watch-screenshot.png to refresh it).
"""

from __future__ import annotations

import bisect
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from watch_truth import SHARED_PREFIX_BLOCKS, SMALL, build, decode, run_truth, shared_prefixes

from pagedkv.cli import main
from pagedkv.simulator.metrics import StepSeries, StepTotals
from pagedkv.watch.document import build_document
from pagedkv.watch.page import embedded_document, render_page
from pagedkv.watch.palette import RESERVED, SEQUENCE, STATES, colour_index, rgb
from pagedkv.watch.record import record

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the Playwright package is not installed: `make test` installs it with the dev extra "
    "(pip install -e '.[dev]')",
    exc_type=ModuleNotFoundError,
)

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
THREE = [*SMALL, "--caches", "naive,orca-pow2,paged", "--rows", "4"]
SAMPLES = [*SMALL, "--rows", "4", "--n", "2"]
PREFIX = [*SMALL, "--rows", "4", "--n", "2", "--enable-prefix-caching"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (`make test` installs Debian's chromium with apt-get as root; "
    "it could not here)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page written for some options, and a separate run of the simulator with the same options."""

    def __init__(self, folder: Path, argv: list[str]) -> None:
        self.path = folder / "watch.html"
        self.path.write_text(render_page(build_document(record(build(argv), 100_000))), encoding="utf-8")
        self.run, self.results, self.truths = run_truth(argv)
        self.times = sorted({t for result in self.results.values() for t in result.series.time})

    def step(self, cache: str, frame: int) -> int:
        return bisect.bisect_right(self.results[cache].series.time, self.times[frame]) - 1


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    return Watched(tmp_path_factory.mktemp("three"), THREE)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    return Watched(tmp_path_factory.mktemp("samples"), SAMPLES)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    return Watched(tmp_path_factory.mktemp("prefix"), PREFIX)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    folder = tmp_path_factory.mktemp("shared")
    return Watched(folder, shared_prefixes(folder))


def open_page(browser: Browser, path: Path, errors: list[str] | None = None) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    if errors is not None:
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_function("window.pagedkvWatch && window.pagedkvWatch.ready", timeout=30_000)
    return page


def seek(page: Page, frame: int) -> None:
    page.locator("#scrubber").fill(str(frame))
    assert page.evaluate("window.pagedkvWatch.frame") == frame


def metric(page: Page, cache: str, key: str) -> tuple[str, str]:
    row = page.locator(f'section.panel[data-cache="{cache}"] [data-metric="{key}"]')
    return row.get_attribute("data-value") or "", row.locator("dd").inner_text()


def canvas_image(page: Page, cache: str) -> tuple[Image.Image, dict[str, Any]]:
    canvas = page.locator(f'canvas[data-cache="{cache}"]')
    geometry = canvas.evaluate("c => Object.fromEntries(Object.entries(c.dataset))")
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    assert image.width == int(geometry["width"])
    return image, {k: int(v) if v.isdigit() else v for k, v in geometry.items()}


def cell(geometry: dict[str, Any], unit: int) -> tuple[int, int, int, int]:
    if geometry["kind"] == "rows":
        height = geometry["rowHeight"]
        return 0, unit * height, geometry["width"], height - geometry["gap"]
    size, cols = geometry["cell"], geometry["cols"]
    return (unit % cols) * size, (unit // cols) * size, size - geometry["gap"], size - geometry["gap"]


# ------------------------------------------------------------------ the tests


def test_page_loads_without_console_errors(browser: Browser, three: Watched) -> None:
    errors: list[str] = []
    page = open_page(browser, three.path, errors)
    seek(page, len(three.times) // 2)
    page.locator('canvas[data-cache="paged"]').hover(position={"x": 5, "y": 5})
    assert page.locator("section.panel").count() == 3
    assert page.evaluate("window.pagedkvWatch.frames") == len(three.times)
    assert errors == []
    page.close()


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.45, 0.7, 1.0])
def test_after_seeking_the_numbers_are_the_simulators_at_that_step(
    browser: Browser, three: Watched, fraction: float
) -> None:
    page = open_page(browser, three.path)
    frame = round(fraction * (len(three.times) - 1))
    seek(page, frame)
    for name, result in three.results.items():
        k = three.step(name, frame)
        assert k >= 0
        shown = page.locator(f'section.panel[data-cache="{name}"] .stepline')
        assert shown.get_attribute("data-step") == str(k)
        assert f"step {k:,} of {len(result.series):,}" in shown.inner_text()
        capacity = result.capacity_slots
        one_step = StepTotals(capacity)  # the simulator's breakdown of capacity, over step k alone
        one_step.add(*(getattr(result.series, column)[k] for column in StepSeries.__slots__))
        for category, slots in one_step.breakdown().items():
            value, text = metric(page, name, category)
            assert int(value) == slots, (name, category)
            assert text.endswith(" %") and abs(float(text[:-2]) - 100 * slots / capacity) <= 0.05 + 1e-9
        series, truth = result.series, three.truths[name].steps[k]
        assert metric(page, name, "batch") == (str(series.batch[k]), f"{series.batch[k]:,}")
        assert metric(page, name, "queue") == (str(series.queue[k]), f"{series.queue[k]:,}")
        assert metric(page, name, "preemptions") == (str(truth.preemptions), f"{truth.preemptions:,}")
        if name == "paged":
            shared = sum(1 for count in truth.ref_counts if count > 1)
            assert metric(page, name, "shared") == (str(shared), f"{shared:,}")
            assert metric(page, name, "cow_copies")[0] == str(truth.cow_copies)
    page.close()


@pytest.mark.parametrize("fraction", [0.1, 0.35, 0.6])
@pytest.mark.parametrize("scenario", ["three", "samples", "prefix"])
def test_grid_colours_match_the_simulators_block_tables(
    browser: Browser, request: pytest.FixtureRequest, scenario: str, fraction: float
) -> None:
    watched: Watched = request.getfixturevalue(scenario)
    page = open_page(browser, watched.path)
    shortest = min((result.series.time for result in watched.results.values()), key=len)
    frame = watched.times.index(shortest[round(fraction * (len(shortest) - 1))])  # every panel still runs
    seek(page, frame)
    page.mouse.move(0, 0)  # no hover: nothing highlighted
    free = rgb(STATES["free"])
    requests = {spec.request_id: spec for spec in watched.run.requests}
    for name in watched.results:
        image, geometry = canvas_image(page, name)
        cache = watched.truths[name].cache
        truth = watched.truths[name].steps[watched.step(name, frame)]
        expected = _expected_left_pixels(name, truth, cache, requests)
        units = cache.num_rows if name == "naive" else cache.capacity_slots // cache.block_size
        assert sorted(expected) == list(range(units))
        cached = 0
        for unit, colour in expected.items():
            x, y, _, h = cell(geometry, unit)
            pixel = image.getpixel((x, y + h // 2))
            if colour == free and pixel == rgb(STATES["cached"]):
                cached += 1  # a free block whose contents the prefix cache still holds
            else:
                assert pixel == colour, (name, unit)
        assert cached == (truth.cached_free if name == "paged" else 0)
        assert any(colour != free for colour in expected.values())
        if name == "naive":
            _check_row_tails(image, geometry, truth, cache, requests)
    page.close()


def test_clicking_a_sequence_shows_its_block_table(browser: Browser, samples: Watched) -> None:
    page = open_page(browser, samples.path)
    paged_times = samples.results["paged"].series.time
    frame = samples.times.index(paged_times[len(paged_times) // 3])
    seek(page, frame)
    k = samples.step("paged", frame)
    truth = samples.truths["paged"].steps[k]
    later = [samples.truths["paged"].steps[k + d].seqs for d in range(1, 20)]
    (request, sample), (table, _) = max(  # one that still grows: its next blocks are in the data, not shown
        (
            item
            for item in truth.seqs.items()
            if any(len(seqs.get(item[0], ([],))[0]) > len(item[1][0]) for seqs in later)
        ),
        key=lambda item: (len(item[1][0]), item[0]),
    )
    own = next(block for block in table if truth.ref_counts[block] == 1)
    _image, geometry = canvas_image(page, "paged")
    x, y, w, h = cell(geometry, own)
    page.locator('canvas[data-cache="paged"]').click(position={"x": x + w / 2, "y": y + h / 2})
    assert page.evaluate("window.pagedkvWatch.selected") == f"{request}:{sample}"
    page.mouse.move(0, 0)  # leave the grid: the click keeps it selected
    shown = page.locator('#selection .table[data-cache="paged"]')
    assert shown.get_attribute("data-blocks") == ",".join(map(str, table))
    entries = shown.locator(".entry").all_inner_texts()
    assert [entry.split(" ")[0] for entry in entries] == [f"{i}→{block}" for i, block in enumerate(table)]
    for entry, block in zip(entries, table, strict=True):
        assert entry.endswith(f"×{truth.ref_counts[block]}") == (truth.ref_counts[block] > 1)
    naive = samples.truths["naive"].steps[samples.step("naive", frame)].seqs.get((request, sample))
    naive_text = page.locator('#selection .table[data-cache="naive"]')
    if naive is None:
        assert "not in memory" in naive_text.inner_text()
    else:
        assert naive_text.get_attribute("data-start") == str(naive[0])
    # clicking a free cell clears the selection
    free = truth.ref_counts.index(0)
    x, y, w, h = cell(geometry, free)
    page.locator('canvas[data-cache="paged"]').click(position={"x": x + 1, "y": y + 1})
    assert page.evaluate("window.pagedkvWatch.selected") is None
    page.close()


def test_shared_blocks_and_copy_on_write_are_marked(browser: Browser, samples: Watched) -> None:
    page = open_page(browser, samples.path)
    steps = samples.truths["paged"].steps
    frame = next(
        f
        for f in range(1, len(samples.times))
        if steps[samples.step("paged", f)].cow_copies > steps[samples.step("paged", f - 1)].cow_copies
        and samples.step("paged", f) != samples.step("paged", f - 1)
    )
    seek(page, frame)
    page.mouse.move(0, 0)
    truth = steps[samples.step("paged", frame)]
    events = page.locator('section.panel[data-cache="paged"] .events').inner_text()
    copies = truth.cow_copies - steps[samples.step("paged", frame - 1)].cow_copies
    assert events.startswith(f"copy-on-write since the previous frame: {copies}")
    image, geometry = canvas_image(page, "paged")
    ink, copy = rgb(STATES["ink"]), rgb(STATES["copy"])
    shared = [b for b, count in enumerate(truth.ref_counts) if count > 1]
    assert shared
    for block in range(len(truth.ref_counts)):
        x, y, w, _h = cell(geometry, block)
        corner = image.getpixel((x + w - 1, y))
        assert (corner == ink) == (block in shared) or image.getpixel((x + w // 2, y)) == copy, block
    copied = [
        int(part.split(" → ")[1].split(" ")[0]) for part in events.split(" — ")[1].split(", ") if "→" in part
    ]
    assert copied
    for block in copied:
        if truth.ref_counts[block]:
            x, y, w, _h = cell(geometry, block)
            assert image.getpixel((x + w // 2, y)) == copy, block
    page.close()


def test_reused_prefix_blocks_are_marked(browser: Browser, shared: Watched) -> None:
    page = open_page(browser, shared.path)
    assert "reused from the prefix cache" in page.locator("#legend").inner_text()
    steps = shared.truths["paged"].steps
    white = rgb(STATES["background"])
    for request, reused in SHARED_PREFIX_BLOCKS.items():  # the first frame that shows the request
        frame = next(
            f for f in range(len(shared.times)) if (request, 0) in steps[shared.step("paged", f)].seqs
        )
        seek(page, frame)
        page.mouse.move(0, 0)
        truth = steps[shared.step("paged", frame)]
        ((table, _),) = truth.seqs.values()  # one request at a time
        image, geometry = canvas_image(page, "paged")
        for block in range(len(truth.ref_counts)):
            x, y, w, h = cell(geometry, block)
            marked = image.getpixel((x + w - 1, y + h - 1)) == white  # a white square, bottom right
            assert marked == (block in table[:reused]), (request, block)
    page.close()


def test_hover_and_click_highlight_a_sequence(browser: Browser, samples: Watched) -> None:
    page = open_page(browser, samples.path)
    paged_times = samples.results["paged"].series.time
    frame = samples.times.index(paged_times[len(paged_times) // 3])
    seek(page, frame)
    truth = samples.truths["paged"].steps[samples.step("paged", frame)]
    (request, sample), (table, _) = max(  # the longest table with a block of its own (drawn in its colour)
        (item for item in truth.seqs.items() if any(truth.ref_counts[b] == 1 for b in item[1][0])),
        key=lambda item: (len(item[1][0]), item[0]),
    )
    key = f"{request}:{sample}"
    _, geometry = canvas_image(page, "paged")
    assert geometry["gap"] == 1  # the outline is drawn in the gap between cells
    x, y, w, h = cell(geometry, next(b for b in table if truth.ref_counts[b] == 1))
    canvas = page.locator('canvas[data-cache="paged"]')
    requests = {spec.request_id: spec for spec in samples.run.requests}

    def drawn(focus: tuple[int, int] | None) -> None:
        """Every panel that holds the focused sequence: its cells in its colour (and outlined), the rest
        faded; a panel without it (waiting or done there) and every panel without focus: as it is."""
        for name in samples.results:
            image, geometry = canvas_image(page, name)
            step_truth = samples.truths[name].steps[samples.step(name, frame)]
            expected = _expected_left_pixels(name, step_truth, samples.truths[name].cache, requests)
            where = step_truth.seqs.get(focus) if focus else None
            mine = set() if where is None else set(where[0]) if name == "paged" else {where[0]}
            own = rgb(SEQUENCE[colour_index(*focus)]) if focus else None
            assert name != "paged" or (focus is None) == (where is None)
            for unit, colour in expected.items():
                cx, cy, cw, ch = cell(geometry, unit)
                pixel = image.getpixel((cx, cy + ch // 2))
                if unit in mine:
                    assert pixel == own, (name, unit)
                else:
                    assert _close(pixel, _faded(colour) if mine else colour), (name, unit, pixel, colour)
                if name == "paged" and cx + cw < geometry["width"]:
                    outlined = image.getpixel((cx + cw, cy + ch // 2)) == rgb(STATES["ink"])
                    right = unit + 1 if (unit + 1) % geometry["cols"] else -1
                    assert outlined == (unit in mine or right in mine), (name, unit)

    page.add_style_tag(content="#tooltip { visibility: hidden !important }")  # it floats over the grids
    canvas.hover(position={"x": x + w / 2, "y": y + h / 2})
    assert page.evaluate("window.pagedkvWatch.selected") is None  # hovering selects nothing...
    assert page.locator("#selection").get_attribute("data-key") == key  # ...but shows and highlights
    drawn((request, sample))
    page.mouse.move(0, 0)  # leaving the grid ends the highlight
    assert page.locator("#selection").get_attribute("data-key") is None
    drawn(None)
    canvas.click(position={"x": x + w / 2, "y": y + h / 2})
    page.mouse.move(0, 0)  # a click keeps it
    assert page.evaluate("window.pagedkvWatch.selected") == key
    drawn((request, sample))
    page.close()


def test_speed_sets_the_frames_per_second(browser: Browser, three: Watched) -> None:
    page = open_page(browser, three.path)
    seek(page, 0)
    page.clock.install()  # the page's clock and animation frames now move only when the test says
    page.clock.pause_at(time.time() * 1000 + 1000)

    def advance(fps: str, seconds: int) -> int:
        page.locator("#speed").select_option(fps)
        before = page.evaluate("window.pagedkvWatch.frame")
        page.clock.run_for(seconds * 1000)
        return int(page.evaluate("window.pagedkvWatch.frame")) - before

    page.locator("#play").click()
    assert page.locator("#play").get_attribute("data-playing") == "1"
    slow = advance("5", 2)
    fast = advance("60", 1)  # changed while playing: from now on 60 frames a second
    medium = advance("10", 2)
    page.locator("#play").click()
    # the frame counter moves at the chosen rate (the last animation frame may fall up to ~2 frames short)
    assert 10 - 2 <= slow <= 10 and 60 - 2 <= fast <= 60 and 20 - 2 <= medium <= 20, (slow, fast, medium)
    assert page.evaluate("window.pagedkvWatch.frame") == slow + fast + medium < len(three.times) - 1
    page.close()


def test_play_advances_the_step(browser: Browser, three: Watched) -> None:
    page = open_page(browser, three.path)
    seek(page, 10)
    before = page.locator('section.panel[data-cache="naive"] .stepline').get_attribute("data-step")
    page.locator("#play").click()
    page.wait_for_function("window.pagedkvWatch.frame >= 20", timeout=10_000)
    page.locator("#play").click()
    assert page.locator("#play").get_attribute("data-playing") == "0"
    frame = page.evaluate("window.pagedkvWatch.frame")
    after = page.locator('section.panel[data-cache="naive"] .stepline').get_attribute("data-step")
    assert int(after or -1) == three.step("naive", frame) > int(before or -1)
    assert int(page.locator("#scrubber").input_value()) == frame
    page.close()


def test_screenshot_of_the_default_run(browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "watch.html"
    assert main(["watch", "--out", str(out)]) == 0
    errors: list[str] = []
    page = open_page(browser, out, errors)
    frame = 30  # 23 s in: both pools full, the naive one with the requests that arrived first
    seek(page, frame)
    # select a request that both caches hold at this moment: one row in naive, blocks all over in paged
    naive, paged = embedded_document(out.read_text(encoding="utf-8"))["caches"]
    held = {
        name: decode(cache, cache["states"][cache["frame_state"][frame]])
        for name, cache in (("naive", naive), ("paged", paged))
    }
    both = sorted(  # a short one of them: most of its naive row is never used
        (key for key in set(held["naive"]) & set(held["paged"]) if len(held["paged"][key][0]) >= 40),
        key=lambda key: held["paged"][key][1],
    )
    table = held["paged"][both[0]][0]
    _, geometry = canvas_image(page, "paged")
    x, y, w, h = cell(geometry, table[len(table) // 2])
    page.locator('canvas[data-cache="paged"]').click(position={"x": x + w / 2, "y": y + h / 2})
    assert page.locator('#selection .table[data-cache="paged"]').get_attribute("data-blocks") == ",".join(
        map(str, table)
    )
    assert page.locator('#selection .table[data-cache="naive"]').get_attribute("data-start") == str(
        held["naive"][both[0]][0]
    )
    page.mouse.move(0, 0)
    shot = tmp_path / "watch-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert errors == []
    target = os.environ.get("PAGEDKV_WATCH_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
    page.close()


# ------------------------------------------------------------------ expected pixels


def _expected_left_pixels(
    name: str, truth: Any, cache: Any, requests: dict[int, Any]
) -> dict[int, tuple[int, int, int]]:
    """The colour of the left-middle pixel of every row / unit / block, from the simulator's state."""
    free = rgb(STATES["free"])
    if name == "paged":
        colours = {block: free for block in range(len(truth.ref_counts))}
        for (request, sample), (table, _) in sorted(truth.seqs.items(), reverse=True):
            for block in table:  # the smallest (request, sample) holding a shared block is drawn
                colours[block] = rgb(SEQUENCE[colour_index(request, sample)])
        return colours
    if name == "naive":
        colours = {row: free for row in range(cache.num_rows)}
        for (request, sample), (row, _) in truth.seqs.items():
            colours[row] = rgb(SEQUENCE[colour_index(request, sample)])
        return colours
    size = cache.block_size  # Orca: the state of each unit's first slot
    colours = {unit: free for unit in range(cache.capacity_slots // size)}
    for (request, sample), (start, length) in truth.seqs.items():
        spec = requests[request]
        claimed, chunk = cache.claimed_slots(spec), cache.chunk_slots(spec)
        for u in range(chunk // size):
            slot = u * size
            colours[start + u] = (
                rgb(SEQUENCE[colour_index(request, sample)])
                if slot < length
                else rgb(RESERVED[colour_index(request, sample)])
                if slot < spec.total_len
                else rgb(STATES["never_used"])
                if slot < claimed
                else rgb(STATES["rounding"])
            )
    return colours


def _faded(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """A pixel under the page's white veil at 72 % opacity (everything but the focused sequence)."""
    r, g, b = (round(0.72 * 255 + 0.28 * c) for c in colour)
    return r, g, b


def _close(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(p - c) <= 2 for p, c in zip(pixel, colour, strict=True))


def _check_row_tails(
    image: Image.Image, geometry: dict[str, Any], truth: Any, cache: Any, requests: Any
) -> None:
    """Naive rows: slots reserved for tokens to come are pale, slots past the request's end grey."""
    width, row_slots = geometry["width"], cache.max_seq_len
    checked = 0
    for (request, sample), (row, length) in truth.seqs.items():
        _, y, _, h = cell(geometry, row)
        final = requests[request].total_len
        to_px = lambda slots: round(slots / row_slots * width)  # noqa: E731 - the page's rounding
        if to_px(row_slots) - to_px(final) >= 3:
            assert image.getpixel((width - 1, y + h // 2)) == rgb(STATES["never_used"])
            checked += 1
        if to_px(final) - to_px(length) >= 3:
            x = (to_px(final) + to_px(length)) // 2
            assert image.getpixel((x, y + h // 2)) == rgb(RESERVED[colour_index(request, sample)])
            checked += 1
    assert checked
