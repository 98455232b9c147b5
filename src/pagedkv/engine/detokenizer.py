"""Token ids to text, and stop strings found on that text.

A sample's text is the tokenizer's decoding of its generated ids alone (what `tokenizer.decode(
output_ids)` gives after HF `generate`), recomputed whenever a sample gets new tokens. A stop string
is looked for only in the part of the text that could contain a new match (from `len(stop) + 3`
characters before the previous end: an incomplete UTF-8 character at the end may decode differently
once its other bytes arrive), and the text is cut before the first one found: earliest
position first, and at one position the string listed first in `stop`.

Invariant: `seq.text` is a prefix of the decoding of the sample's tokens, and never contains a stop
string once `min_tokens` tokens have been generated.
"""

from __future__ import annotations

from typing import Any

from pagedkv.engine.sequence import Sequence


class Detokenizer:
    """Wraps a Hugging Face tokenizer (`PreTrainedTokenizerBase`); any object with
    `decode(ids, skip_special_tokens=...)` works."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def update(self, seq: Sequence) -> str | None:
        """Decode `seq`'s output into `seq.text`; return the stop string that now ends it, if any
        (the text is then cut before it)."""
        params = seq.request.params
        previous = len(seq.text)
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=params.skip_special_tokens)
        seq.text = text
        if not params.stop or seq.num_generated < params.min_tokens:
            return None
        found: tuple[int, str] | None = None
        for stop in params.stop:
            at = text.find(stop, max(0, previous - len(stop) - 3))  # -3: a partial character may change
            if at >= 0 and (found is None or at < found[0]):
                found = (at, stop)
        if found is None:
            return None
        seq.text = text[: found[0]]
        return found[1]
