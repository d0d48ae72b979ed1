"""Which x86 instruction-set class a CPU belongs to, read from /proc/cpuinfo flags.

OpenVINO and PyTorch pick different kernels (and, for OpenVINO's default, a different inference precision) by
ISA, so the same command gives slightly different numbers on an AVX2-only AMD EPYC, an AVX-512/VNNI Xeon and
a Xeon with AMX. Every result tilescope writes names the class it ran on, so such runs can be told apart.
Pure: the parsing takes the flags as text or a set, so it is tested with fake flag strings.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

CPUINFO = "/proc/cpuinfo"


class IsaClass(enum.StrEnum):
    """The widest matrix/vector instructions a CPU offers for inference, best first."""

    AMX = "amx"
    """AMX tiles (Sapphire Rapids and later Xeons): int8 and bf16 matrix multiply."""
    AVX512_VNNI = "avx512_vnni"
    """AVX-512 with VNNI int8 dot products (Cascade Lake and later Xeons, AMD Zen 4)."""
    AVX512 = "avx512"
    """AVX-512 without VNNI (Skylake-SP)."""
    AVX2 = "avx2"
    """AVX2 and FMA only (AMD EPYC before Zen 4, older Xeons)."""
    BASELINE = "baseline"
    """Anything older (SSE only)."""


def flags_of(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo text (every core of a node has the same)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_flags(path: str = CPUINFO) -> set[str]:
    """This machine's CPU flags; empty when /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open(path) as f:
            return set(flags_of(f.read()))
    except OSError:
        return set()


def isa_class(flags: Iterable[str]) -> IsaClass:
    """The class of a CPU with these flags."""
    have = set(flags)
    if have & {"amx_int8", "amx_bf16"}:
        return IsaClass.AMX
    if "avx512_vnni" in have or ("avx512f" in have and "avx512vnni" in have):
        return IsaClass.AVX512_VNNI
    if "avx512f" in have:
        return IsaClass.AVX512
    if "avx2" in have:
        return IsaClass.AVX2
    return IsaClass.BASELINE


def has_bf16(flags: Iterable[str]) -> bool:
    """Whether the CPU computes bf16 natively (AMX or AVX-512 BF16): where `--precision bf16` pays off."""
    return bool(set(flags) & {"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class CpuIsa:
    """A CPU's ISA class and whether it has native bf16; `str()` is the class name that rows carry."""

    isa: IsaClass
    bf16: bool

    def __str__(self) -> str:
        return self.isa.value

    def to_json(self) -> dict:
        return {"cpu_isa": self.isa.value, "native_bf16": self.bf16}


def cpu_isa_of(flags: Iterable[str]) -> CpuIsa:
    have = set(flags)
    return CpuIsa(isa_class(have), has_bf16(have))


@functools.cache
def this_cpu(path: str = CPUINFO) -> CpuIsa:
    """The ISA of the machine this process runs on (read once)."""
    return cpu_isa_of(cpu_flags(path))
