"""The page: one self-contained HTML file, the recorded document inline with its script and style.

Invariant: the file needs nothing but a browser: no server, no network, no file beside it (the
script, the style and the data are inside; the data as base64, which cannot close the ``<script>``
element that holds it).
"""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

from pagedkv.watch.document import decode, encode

_PLACEHOLDER = re.compile(r"\{\{(TITLE|STYLE|SCRIPT|DATA)\}\}")
_DATA_TAG = '<script id="watch-data" type="application/octet-stream">'


def _asset(name: str) -> str:
    return resources.files("pagedkv.watch").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def title(document: dict[str, Any]) -> str:
    names = [cache["name"] for cache in document["caches"]]
    return "pagedkv watch: " + " vs ".join(names) + " on the same requests"


def render_page(document: dict[str, Any]) -> str:
    """The HTML text of the page for `document` (see `document.build_document`)."""
    script = _asset("watch.js")
    if "</script" in script.lower():
        raise AssertionError("watch.js must not contain a closing script tag")
    values = {
        "TITLE": html.escape(title(document)),
        "STYLE": _asset("watch.css"),
        "SCRIPT": script,
        "DATA": encode(document),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _asset("page.html"))


def embedded_document(page: str) -> dict[str, Any]:
    """The document inside a page written by `render_page` (for checks and tools)."""
    start = page.index(_DATA_TAG) + len(_DATA_TAG)
    return decode(page[start : page.index("</script>", start)])
