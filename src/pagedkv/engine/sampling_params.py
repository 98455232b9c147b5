"""`SamplingParams`: how one request is sampled and when it stops, with vLLM's names and meanings.

Fields (vLLM's defaults unless noted):
- `n` (1): samples per prompt; they share the prompt's blocks (`BlockManager.fork`).
- `temperature` (1.0): 0 is greedy; otherwise logits are divided by it before sampling.
- `top_p` (1.0), `top_k` (0 or -1: off), `min_p` (0.0: off): keep the smallest set of tokens whose
  probability reaches `top_p`; the `top_k` most likely; those with probability >= `min_p` times the
  most likely one's.
- `seed` (None): the request's own random stream; None draws from the engine's seed and the
  request id, so a fresh engine given the same requests in the same order samples the same tokens.
- `max_tokens` (16), `min_tokens` (0): at most / at least this many generated tokens. Before
  `min_tokens`, EOS and `stop_token_ids` cannot be sampled (their logits are -inf) and stop strings
  are not looked for.
- `stop` (none): strings matched on the decoded output; generation stops at the first one and the
  text is cut before it (`finish_reason="stop"`, `stop_reason` the string). Needs a tokenizer.
- `stop_token_ids` (none): tokens that end the request (kept in `token_ids`, as EOS is).
- `ignore_eos` (False): keep generating past the model's EOS tokens.
- `repetition_penalty` (1.0): HF's and vLLM's: a logit of a token already in the prompt or the output
  is divided by it when positive and multiplied by it when negative.
- `logprobs` (None): return, for each generated token, the log-probability of the sampled token and
  of the `logprobs` most likely tokens (from the model's raw distribution, as vLLM does by default).
- `skip_special_tokens` (True): leave special tokens out of the decoded text.

Invariant: an instance is valid and immutable once built; an unknown field or a value out of range
raises `InvalidSamplingParams` (a `PagedKVError`) naming the field, so nothing invalid reaches a step.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

from pagedkv.engine.errors import InvalidSamplingParams


@dataclass(frozen=True, init=False)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int = 16
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    skip_special_tokens: bool = True

    def __init__(self, **values: Any) -> None:
        """Keyword arguments only, named as the fields above; `stop` may be one string or a list."""
        names = [f.name for f in fields(self)]
        for name in values:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
                raise InvalidSamplingParams(f"SamplingParams has no field {name!r}{hint}")
        for f in fields(self):
            object.__setattr__(self, f.name, values.get(f.name, f.default))
        object.__setattr__(self, "stop", _as_strings(self.stop))
        object.__setattr__(self, "stop_token_ids", _as_token_ids(self.stop_token_ids))
        self._validate()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def _validate(self) -> None:
        _require_int("n", self.n, low=1)
        _require_int("max_tokens", self.max_tokens, low=1)
        _require_int("min_tokens", self.min_tokens, low=0)
        if self.min_tokens > self.max_tokens:
            raise InvalidSamplingParams(
                f"min_tokens={self.min_tokens} exceeds max_tokens={self.max_tokens}; lower min_tokens"
            )
        _require_float("temperature", self.temperature, "must be >= 0 (0 = greedy)", lambda v: v >= 0)
        _require_float("top_p", self.top_p, "must be in (0, 1] (1 = off)", lambda v: 0 < v <= 1)
        _require_float("min_p", self.min_p, "must be in [0, 1] (0 = off)", lambda v: 0 <= v <= 1)
        _require_float(
            "repetition_penalty", self.repetition_penalty, "must be > 0 (1 = off)", lambda v: v > 0
        )
        _require_int("top_k", self.top_k, low=-1)
        if self.seed is not None:
            _require_int("seed", self.seed, low=0)
        if self.logprobs is not None:
            _require_int("logprobs", self.logprobs, low=0)
        for name in ("ignore_eos", "skip_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidSamplingParams(f"{name} must be True or False, got {getattr(self, name)!r}")


def _require_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSamplingParams(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise InvalidSamplingParams(f"{name} must be >= {low}, got {value}")


def _require_float(name: str, value: object, rule: str, ok: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSamplingParams(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or not ok(value):
        raise InvalidSamplingParams(f"{name} {rule}, got {value}")


def _as_strings(stop: object) -> tuple[str, ...]:
    items = (stop,) if isinstance(stop, str) else stop
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items):
        raise InvalidSamplingParams(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return tuple(items)


def _as_token_ids(ids: object) -> tuple[int, ...]:
    if not isinstance(ids, list | tuple) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids
    ):
        raise InvalidSamplingParams(f"stop_token_ids must be a list of token ids (ints >= 0), got {ids!r}")
    return tuple(ids)
