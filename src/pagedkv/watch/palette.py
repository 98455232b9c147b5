"""The colours of `pagedkv watch`, shared by the page and the GIF so both draw the same picture.

Invariant: a sequence's colour depends only on its request id and its sample (sequence) index, so the
same request has the same colour in every panel; the page and the GIF read the colour index from
the recorded data (`colour_index` runs once, here), never recompute it.

Why these colours: the sequence hues are spread around the wheel and consecutive request ids land far
apart (a step of 7 in 24), so neighbours in a pool rarely share a hue; every memory *state* that is not
a token (reserved, never used, rounding, free, cached) is drawn in a colour no sequence uses, so waste
reads as waste at a glance.
"""

from __future__ import annotations

import colorsys

_HUES = 24


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _sequence_colours() -> tuple[list[str], list[str]]:
    solid, pale = [], []
    for i in range(_HUES):
        hue = i / _HUES
        lightness = 0.46 if i % 2 else 0.56  # alternate so adjacent hues differ in lightness too
        solid.append(_hex(colorsys.hls_to_rgb(hue, lightness, 0.72)))
        pale.append(_hex(colorsys.hls_to_rgb(hue, 0.86, 0.55)))
    return solid, pale


SEQUENCE, RESERVED = _sequence_colours()
"""Token states of a sequence (solid) and the slots it reserved but has not filled yet (pale, same hue)."""

STATES = {
    "free": "#f3f4f6",  # nobody holds it
    "never_used": "#6b7280",  # reserved past the sequence's final length: internal fragmentation
    "rounding": "#b08850",  # Orca: slots the buddy allocator added to round a chunk up (external)
    "cached": "#c7e9d3",  # paged, prefix caching: a free block whose contents a prompt can still reuse
    "background": "#ffffff",
    "ink": "#111827",
    "copy": "#f97316",  # outline of a block just written by copy-on-write
}


def colour_index(request_id: int, sample: int) -> int:
    """Index into `SEQUENCE` / `RESERVED` of sample `sample` of request `request_id`."""
    return (request_id * 7 + sample * 11) % _HUES


def rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` as an (r, g, b) tuple."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
