"""The data embedded in the page (and read by the GIF renderer): one JSON document per recording.

Invariant: every number the page shows is in this document, taken from the simulator: the metrics of a
state are the `SimResult.series` entries of that state's step, copied, and its breakdown is the
simulator's own `StepTotals.breakdown` of that one step (`step_breakdown`), never recomputed here; the
grid is drawn from the snapshots of `capture`. The page does no simulation.

Layout (``"format": "pagedkv-watch"``, ``"version": 1``)::

    times                frame i's simulated time (s), shared by every cache
    caches[]             one per panel, in the order of --caches:
      name, kind ("rows" | "buddy" | "blocks"), layout, capacity_slots, unit_slots, num_units, steps,
      requests, prefix_caching, end_time (when its last request finished: from then on its panel says so)
      frame_state[i]     index into states of the state shown at frame i (-1: not started yet)
      placements         columns, one entry per placement (see `capture.Placement`): request, sample,
                         colour, prompt_len, final_len; rows/buddy: start, units, claimed;
                         blocks: blocks (its block table), reused
      states[]           step, time, batch, queue, held, saved, preemptions, breakdown {category: slots},
                         seqs (flat: placement, length, blocks held); blocks: cow_copies,
                         prefix_hit_tokens, cached (free blocks still in the prefix cache, a bitmap:
                         base64 of bytes where bit b % 8 of byte b // 8 is block b; most of a pool
                         can be cached, so a list of ids would be ~10x larger), copies ([step, source,
                         destination] since the previous state)

It travels as zlib-compressed JSON in base64 (`encode`/`decode`), which the page inflates with the
browser's own ``DecompressionStream``: block tables repeat a lot, so this is ~5-10x smaller.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from pagedkv.simulator.metrics import BREAKDOWN_LABELS, StepSeries, StepTotals
from pagedkv.watch import palette
from pagedkv.watch.capture import BLOCKS, Track
from pagedkv.watch.record import Recording

FORMAT, VERSION = "pagedkv-watch", 1


def build_document(recording: Recording) -> dict[str, Any]:
    run = recording.run
    config = run.config
    return {
        "format": FORMAT,
        "version": VERSION,
        "workload": run.workload,
        "memory": run.memory,
        "engine": getattr(config.step_time, "describe", lambda: "")(),
        "num_seqs": config.num_seqs,
        "palette": {"sequence": palette.SEQUENCE, "reserved": palette.RESERVED, "states": palette.STATES},
        "breakdown_labels": dict(BREAKDOWN_LABELS),
        "times": recording.times,
        "caches": [
            _cache(recording, name, track, _frame_states(track, recording.steps[name]))
            for name, track in recording.tracks.items()
        ],
    }


def _frame_states(track: Track, steps: list[int]) -> list[int]:
    """Each frame's index into the track's snapshots (-1 before the cache's first step)."""
    index = {snapshot.step: i for i, snapshot in enumerate(track.snapshots)}
    return [-1 if step < 0 else index[step] for step in steps]


def _cache(recording: Recording, name: str, track: Track, frame_state: list[int]) -> dict[str, Any]:
    result = recording.results[name]
    series = result.series
    assert series is not None, "record() keeps every step's series"
    placements = track.placements
    columns: dict[str, list[Any]] = {
        "request": [p.request for p in placements],
        "sample": [p.sample for p in placements],
        "colour": [p.colour for p in placements],
        "prompt_len": [p.prompt_len for p in placements],
        "final_len": [p.final_len for p in placements],
    }
    if track.kind == BLOCKS:
        columns["blocks"] = [p.blocks for p in placements]
        columns["reused"] = [p.reused for p in placements]
    else:
        columns["start"] = [p.start for p in placements]
        columns["units"] = [p.units for p in placements]
        columns["claimed"] = [p.claimed for p in placements]
    states = []
    for snapshot in track.snapshots:
        k = snapshot.step
        state: dict[str, Any] = {
            "step": k,
            "time": series.time[k],
            "batch": series.batch[k],
            "queue": series.queue[k],
            "held": series.held[k],
            "saved": series.saved[k],
            "preemptions": snapshot.preemptions,
            "breakdown": step_breakdown(series, k, result.capacity_slots),
            "seqs": snapshot.seqs,
        }
        if track.kind == BLOCKS:
            state["cow_copies"] = snapshot.cow_copies
            state["prefix_hit_tokens"] = snapshot.prefix_hit_tokens
            state["cached"] = bitmap(snapshot.cached, track.num_units)
            state["copies"] = [list(copy) for copy in snapshot.copies]
        states.append(state)
    return {
        "name": name,
        "kind": track.kind,
        "layout": result.layout,
        "capacity_slots": track.capacity_slots,
        "unit_slots": track.unit_slots,
        "num_units": track.num_units,
        "steps": len(series),
        "requests": result.num_requests,
        "prefix_caching": track.prefix_caching,
        "end_time": result.end_time,
        "frame_state": frame_state,
        "placements": columns,
        "states": states,
    }


def bitmap(blocks: list[int], num_blocks: int) -> str:
    """The set `blocks` of ``0 .. num_blocks - 1`` as base64 of a little-endian bitmap."""
    bits = bytearray(-(-num_blocks // 8))
    for block in blocks:
        bits[block >> 3] |= 1 << (block & 7)
    return base64.b64encode(bytes(bits)).decode("ascii")


def step_breakdown(series: StepSeries, k: int, capacity: int) -> dict[str, int]:
    """Step `k`'s capacity by waste category, in slots: the simulator's `StepTotals` over that step alone."""
    totals = StepTotals(capacity)
    totals.add(
        series.time[k],
        series.batch[k],
        series.queue[k],
        series.held[k],
        series.tokens[k],
        series.internal[k],
        series.padding[k],
        series.saved[k],
    )
    return totals.breakdown()


def encode(document: dict[str, Any]) -> str:
    """The document as base64 of zlib-compressed JSON (ASCII: safe inside a ``<script>`` element)."""
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return base64.b64encode(zlib.compress(text.encode("utf-8"), 6)).decode("ascii")


def decode(payload: str) -> dict[str, Any]:
    """Inverse of `encode`."""
    return json.loads(zlib.decompress(base64.b64decode(payload)).decode("utf-8"))
