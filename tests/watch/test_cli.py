"""`pagedkv watch`: the page and the GIF it writes, --open, --help, and every bad option or path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from watch_truth import SMALL

import pagedkv.watch.record
from pagedkv.cli import main
from pagedkv.watch import gif as gif_module
from pagedkv.watch.page import embedded_document
from pagedkv.watch.palette import SEQUENCE, rgb

WATCH = ["watch", *SMALL, "--rows", "4"]


def test_writes_one_self_contained_page_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "memory.html"
    assert main([*WATCH, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (" in printed and "frames over" in printed
    page = out.read_text(encoding="utf-8")
    outside_data = re.sub(r'(<script id="watch-data"[^>]*>)[^<]*', r"\1", page)
    assert re.search(r"\b(?:src|href)\s*=|@import|url\(|https?:", outside_data) is None  # nothing fetched
    assert outside_data.count("<script") == 2
    document = embedded_document(page)
    assert [cache["name"] for cache in document["caches"]] == ["naive", "paged"]  # watch's default caches
    assert "40 synthetic requests" in document["workload"]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["watch", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "--out PATH the page (.html) (default: watch.html)",
        "(default: 600)",
        "--open open the page in the default browser",
        "--gif PATH",
        "--gif-frames GIF_FRAMES frames in the GIF, spread over the page's (default: 60)",
        "(default: naive,paged)",
        "--trace PATH",
        "--beam-width BEAM_WIDTH",
        "--enable-prefix-caching",
    ):
        assert expected in text, expected


def _no_simulation(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the simulation ran before the options were checked")


BAD = [
    (["--frames", "1"], "--frames 1: "),
    (["--gif", "film.gif", "--gif-frames", "0"], "--gif-frames 0: "),
    (
        ["--out", "/nonexistent-dir/w.html"],
        "--out /nonexistent-dir/w.html: the folder /nonexistent-dir does not",
    ),
    (["--out", "page.txt"], "--out page.txt: unsupported file type '.txt'; use one of .html, .htm"),
    (["--gif", "film.png"], "--gif film.png: unsupported file type '.png'; use one of .gif"),
    (["--out", "."], "--out .: is a folder"),
    (["--caches", "naive,bogus"], "unknown cache 'bogus'"),
    (["--rate", "0"], "argument --rate: must be a number > 0"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_options_are_one_line_naming_the_flag(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pagedkv.watch.record, "record", _no_simulation)
    try:
        code = main([*WATCH, *args])
    except SystemExit as stop:  # refused by the option parser itself
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pagedkv watch: error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_open_hands_the_page_to_the_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    out = tmp_path / "w.html"
    assert main([*WATCH, "--out", str(out), "--open"]) == 0
    assert opened == [out.resolve().as_uri()]


def test_ctrl_c_while_writing_leaves_the_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, film = tmp_path / "w.html", tmp_path / "w.gif"
    out.write_text("old page")
    film.write_bytes(b"old film")
    real_write_text = Path.write_text

    def interrupted_write(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupted_write)
    assert main([*WATCH, "--out", str(out), "--gif", str(film)]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    monkeypatch.undo()
    assert out.read_text() == "old page" and film.read_bytes() == b"old film"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.gif", "w.html"]

    def interrupted_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        Path(fp).write_bytes(b"GIF89a half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    assert main([*WATCH, "--out", str(out), "--gif", str(film)]) == 130
    assert film.read_bytes() == b"old film"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.gif", "w.html"]


def test_gif_draws_the_pages_frames_deterministically(tmp_path: Path) -> None:
    pages = [tmp_path / "a.html", tmp_path / "b.html"]
    films = [tmp_path / "a.gif", tmp_path / "b.gif"]
    for page, film in zip(pages, films, strict=True):
        assert (
            main([*WATCH, "--out", str(page), "--frames", "60", "--gif", str(film), "--gif-frames", "12"])
            == 0
        )
    assert films[0].read_bytes() == films[1].read_bytes()
    document = embedded_document(pages[0].read_text(encoding="utf-8"))
    chosen = gif_module.frame_indices(len(document["times"]), 12)
    assert len(chosen) == 12 and chosen[0] == 0 and chosen[-1] == len(document["times"]) - 1
    with Image.open(films[0]) as image:
        assert image.n_frames == 12
        image.seek(6)
        frame = image.convert("RGB")
    paged = document["caches"][1]
    geometry = gif_module.layout(paged, gif_module.PANEL_WIDTH, gif_module.GRID_HEIGHT)
    left = gif_module.MARGIN + gif_module.PANEL_WIDTH + gif_module.MARGIN
    top = gif_module.HEADER + gif_module.PANEL_HEADER - 12
    state = paged["states"][paged["frame_state"][chosen[6]]]
    places, owners = paged["placements"], {}
    seqs = state["seqs"]
    for j in range(0, len(seqs), 3):
        p, held = seqs[j], seqs[j + 2]
        for block in places["blocks"][p][:held]:
            owners[block] = min(owners.get(block, (1 << 30, 0)), (places["request"][p], places["sample"][p]))
    assert owners
    for block in range(paged["num_units"]):
        x, y, _, h = geometry.box(block)
        pixel = frame.getpixel((left + x, top + y + h // 2))
        if block in owners:
            request, sample = owners[block]
            assert pixel == rgb(SEQUENCE[(request * 7 + sample * 11) % len(SEQUENCE)]), block
        else:
            assert pixel == rgb(document["palette"]["states"]["free"]), block


@pytest.mark.slow
def test_the_readmes_gif_is_what_its_documented_command_draws(tmp_path: Path) -> None:
    """docs/watch.gif (the README's first image) is the default run as the code draws it today: the
    command docs/watch.md gives, frame by frame and pixel by pixel (not byte by byte: encoders differ)."""
    committed = Path(__file__).resolve().parents[2] / "docs" / "watch.gif"
    fresh = tmp_path / "watch.gif"
    assert main(["watch", "--out", str(tmp_path / "watch.html"), "--gif", str(fresh)]) == 0
    with Image.open(committed) as old, Image.open(fresh) as new:
        assert old.n_frames == new.n_frames == 60
        for index in range(new.n_frames):
            old.seek(index)
            new.seek(index)
            assert old.convert("RGB").tobytes() == new.convert("RGB").tobytes(), f"frame {index} differs"
