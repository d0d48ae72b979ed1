"""Which CPU math path training uses: bf16 autocast where the CPU has AMX, else fp32; IPEX only if usable.

The chosen path is recorded in every training summary so a reader knows what ran.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass

from xray.models.cpu_isa import cpu_flags


class Precision(enum.StrEnum):
    AUTO = "auto"
    BF16 = "bf16"
    FP32 = "fp32"


def has_amx_bf16() -> bool:
    return "amx_bf16" in cpu_flags()


def ipex_version() -> str | None:
    """The IPEX version when it imports and matches torch's major.minor; None otherwise.

    IPEX was archived after 2.8 and pins its torch release, so on our pinned torch it is normally absent.
    """
    import torch

    try:
        ipex = importlib.import_module("intel_extension_for_pytorch")
    except Exception:  # noqa: BLE001 - any import failure means "not usable", which is the answer
        return None
    version = getattr(ipex, "__version__", "")
    if version.split(".")[:2] != torch.__version__.split(".")[:2]:
        return None
    return version


@dataclass(frozen=True)
class MathPath:
    """What a trainer actually runs: dtype for autocast, channels_last, and whether IPEX optimised it."""

    precision: Precision
    channels_last: bool
    ipex: str | None
    amx: bool

    def describe(self) -> str:
        ipex = f"ipex {self.ipex}" if self.ipex else "stock torch"
        return f"{self.precision.value}, {'channels_last' if self.channels_last else 'contiguous'}, {ipex}, " \
               f"amx={'yes' if self.amx else 'no'}"


def choose_math_path(requested: Precision | str = Precision.AUTO) -> MathPath:
    """AUTO -> bf16 on AMX CPUs, fp32 elsewhere. An explicit BF16 is honoured (slow without AMX)."""
    requested = Precision(requested)
    amx = has_amx_bf16()
    if requested == Precision.AUTO:
        requested = Precision.BF16 if amx else Precision.FP32
    return MathPath(precision=requested, channels_last=True, ipex=ipex_version(), amx=amx)
