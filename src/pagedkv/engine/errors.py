"""Typed errors of the engine (all `PagedKVError`s), raised when a request or model is refused up front."""

from __future__ import annotations

from pagedkv.errors import InvalidArgument, PagedKVError


class UnsupportedModel(PagedKVError, TypeError):
    """The model is not a causal LM of a family the engine runs (or uses a feature it cannot page)."""


class PromptTooLong(InvalidArgument):
    """A prompt (plus the tokens to generate) exceeds the model's maximum length or the whole block pool."""


class InvalidPrompt(InvalidArgument, TypeError):
    """A prompt that is not what the call takes: a `str` given to the token-id API, a float token id,
    a token outside the vocabulary, an empty prompt, chat messages without a chat template."""


class InvalidSamplingParams(InvalidArgument):
    """A `SamplingParams` field that does not exist or whose value is out of range."""


class CheckpointError(PagedKVError, FileNotFoundError):
    """A directory that is not a loadable local checkpoint; the message names the missing piece."""
