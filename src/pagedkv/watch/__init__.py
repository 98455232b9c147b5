"""`pagedkv watch`: the simulator's KV pools drawn frame by frame in one self-contained HTML page.

The naive cache and the paged cache (optionally an Orca policy) serve the identical requests; the page
shows each pool as a grid on one shared clock, with the simulator's own per-step metrics beside it.

Pipeline (each step its own module): `record` runs the simulation with a `capture.Recorder` per cache
(the only code that reads a cache's state) at the frames `frames` picks; `document` turns that into
the JSON the page embeds; `page` writes the HTML (script `static/watch.js`); `gif` draws the same
frames into an animated GIF with Pillow; `cli` is ``pagedkv watch``.

Invariant: the page and the GIF show recorded simulator state only; they never re-simulate.
"""
