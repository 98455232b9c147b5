"""Typed errors of the engine (all `PagedKVError`s), raised when a request or model is refused up front."""

from __future__ import annotations

from pagedkv.errors import InvalidArgument, PagedKVError


class UnsupportedModel(PagedKVError, TypeError):
    """The model is not a Llama-family causal LM the engine can run (or uses a feature it cannot page)."""


class PromptTooLong(InvalidArgument):
    """A prompt (plus the tokens to generate) exceeds the model's maximum length or the whole block pool."""
