"""A GPU as KV planning and the step-time model see it: memory, memory bandwidth, tensor peak, links.

Invariant: a `GpuSpec` is either a catalogue entry (``simulator/catalogue/gpus.json``, every number
from the vendor's datasheet, with its source) or numbers a user gave explicitly; it is validated on
creation, so the deployment and the time model never check it again.

Units: memory in GiB (datasheet capacities are binary), bandwidths in GB/s (10^9 B/s, as datasheets
give them), peaks in dense TFLOP/s (no 2:4 sparsity: serving does not use it). ``link_gb_per_s`` is one
direction from a GPU to its tensor-parallel peers; the all-reduce term of `RooflineStepTime` uses it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from pagedkv.errors import InvalidArgument

GIB = 1 << 30


class GpuSpecError(InvalidArgument):
    """An unknown GPU name or an impossible GPU figure."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator. `from_name` reads the catalogue; the constructor takes explicit numbers."""

    name: str
    memory_gib: float
    hbm_gb_per_s: float
    bf16_tflops: float
    fp8_tflops: float | None = None
    link_gb_per_s: float = 0.0
    link: str = ""
    source: str = "given explicitly"

    def __post_init__(self) -> None:
        for name in ("memory_gib", "hbm_gb_per_s", "bf16_tflops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise GpuSpecError(f"GPU {self.name!r}: {name}={value!r} must be a finite number > 0")
        if self.fp8_tflops is not None and not (math.isfinite(self.fp8_tflops) and self.fp8_tflops > 0):
            raise GpuSpecError(f"GPU {self.name!r}: fp8_tflops={self.fp8_tflops!r} must be > 0 (or None)")
        if not (math.isfinite(self.link_gb_per_s) and self.link_gb_per_s >= 0):
            raise GpuSpecError(f"GPU {self.name!r}: link_gb_per_s={self.link_gb_per_s!r} must be >= 0")

    @classmethod
    def from_name(cls, name: str) -> GpuSpec:
        """A catalogue GPU by name or alias, case-insensitively (`catalogue()` lists them)."""
        wanted = name.strip().lower()
        for key, entry in _catalogue().items():
            if wanted in (key.lower(), *(alias.lower() for alias in entry.get("aliases", ()))):
                known = {f.name for f in fields(cls)} - {"name"}
                return cls(name=key, **{k: v for k, v in entry.items() if k in known})
        raise GpuSpecError(f"GPU {name!r} is not in the catalogue; choose one of {', '.join(catalogue())}")

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_gb_per_s * 1e9

    @property
    def peak_flops(self) -> float:
        """Dense fp16/bf16 tensor-core FLOP/s: what 16-bit weights are multiplied at."""
        return self.bf16_tflops * 1e12

    @property
    def link_bytes_per_s(self) -> float:
        return self.link_gb_per_s * 1e9

    def describe(self) -> str:
        fp8 = f", {self.fp8_tflops:,g} fp8" if self.fp8_tflops else ""
        link = f", {self.link or 'link'}: {self.link_gb_per_s:,g} GB/s each way" if self.link_gb_per_s else ""
        return (
            f"{self.name}: {self.memory_gib:g} GiB, {self.hbm_gb_per_s:,g} GB/s, "
            f"{self.bf16_tflops:,g} TFLOP/s bf16{fp8} dense{link}"
        )


def catalogue() -> tuple[str, ...]:
    """Names of the GPUs shipped with pagedkv."""
    return tuple(_catalogue())


def _catalogue() -> dict[str, Any]:
    text = resources.files("pagedkv.simulator").joinpath("catalogue/gpus.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["gpus"])
