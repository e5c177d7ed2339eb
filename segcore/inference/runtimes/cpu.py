"""What this CPU can do: its model name and the instruction-set flags that decide which
reduced-precision paths are fast (``avx512_bf16`` or AMX for bfloat16; VNNI for int8).

Read from ``/proc/cpuinfo`` (Linux); elsewhere the flags are unknown (empty), which only means
that :func:`supports_bf16` answers ``False`` and ``auto`` does not try bfloat16.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from dataclasses import dataclass

INTERESTING_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)
"""The flags :class:`CpuInfo` keeps: those OpenVINO's and oneDNN's fast kernels depend on."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, logical core count and the flags in :data:`INTERESTING_FLAGS`."""

    model: str
    cores: int
    flags: tuple[str, ...]

    @property
    def key(self) -> str:
        """A short stable id of this kind of CPU (model, flags and core count): accuracy-gate
        results and speed measurements are kept per key, since both depend on the CPU."""
        text = f"{self.model}|{','.join(self.flags)}|{self.cores}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """One line: model, cores and flags, for benchmark tables and notices."""
        flags = " ".join(self.flags) or "no AVX2/AVX-512/AMX flags found"
        return f"{self.model} ({self.cores} logical cores; {flags})"


def parse_cpuinfo(text: str, cores: int) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (the first processor's entry)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    kept = tuple(flag for flag in INTERESTING_FLAGS if flag in flags)
    return CpuInfo(model=model or platform.processor() or "unknown CPU", cores=cores, flags=kept)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (read once per process)."""
    import os

    cores = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpuinfo(handle.read(), cores)
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown CPU", cores=cores, flags=())


def supports_bf16(info: CpuInfo | None = None) -> bool:
    """Whether bfloat16 arithmetic is native here (``avx512_bf16`` or AMX): without it
    OpenVINO's bfloat16 hint falls back to float32, so there is nothing to gain."""
    flags = (info or cpu_info()).flags
    return "avx512_bf16" in flags or "amx_bf16" in flags
