"""xray.models.cpu_isa: the ISA class and native bf16 of a CPU, from /proc/cpuinfo flags (fake flag strings here)."""

from __future__ import annotations

import pytest

from xray.models.cpu_isa import CpuIsa, IsaClass, cpu_flags, cpu_isa_of, flags_of, has_bf16, isa_class

BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 sse4_1 sse4_2 popcnt aes xsave avx"
EPYC_ZEN2 = BASE + " f16c rdrand fma avx2 bmi1 bmi2 sha_ni clzero"  # AVX2 only
SKYLAKE_SP = BASE + " fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl"
CASCADE_LAKE = SKYLAKE_SP + " avx512_vnni"
COOPER_LAKE = CASCADE_LAKE + " avx512_bf16"
SAPPHIRE_RAPIDS = COOPER_LAKE + " avx_vnni amx_bf16 amx_tile amx_int8"
ZEN4 = SKYLAKE_SP + " avx512_vnni avx512_bf16 avx_vnni"


@pytest.mark.parametrize(("flags", "isa", "bf16"), [
    (EPYC_ZEN2, IsaClass.AVX2, False),
    (SKYLAKE_SP, IsaClass.AVX512, False),
    (CASCADE_LAKE, IsaClass.AVX512_VNNI, False),
    (COOPER_LAKE, IsaClass.AVX512_VNNI, True),
    (ZEN4, IsaClass.AVX512_VNNI, True),
    (SAPPHIRE_RAPIDS, IsaClass.AMX, True),
    (BASE, IsaClass.BASELINE, False),
    (BASE + " avx2 avx_vnni", IsaClass.AVX2, False),  # AVX-VNNI on 256-bit registers (Alder Lake) is still AVX2
])
def test_isa_class_and_bf16_from_flags(flags, isa, bf16):
    have = set(flags.split())
    assert isa_class(have) is isa
    assert has_bf16(have) is bf16
    assert cpu_isa_of(have) == CpuIsa(isa, bf16)
    assert str(cpu_isa_of(have)) == isa.value
    assert cpu_isa_of(have).to_json() == {"cpu_isa": isa.value, "native_bf16": bf16}


def test_flags_come_from_the_first_processor_of_cpuinfo(tmp_path):
    text = (f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: {SAPPHIRE_RAPIDS}\n\n"
            f"processor\t: 1\nflags\t\t: {EPYC_ZEN2}\n")
    assert flags_of(text) == frozenset(SAPPHIRE_RAPIDS.split())
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_flags(str(path)) == set(SAPPHIRE_RAPIDS.split())
    assert isa_class(cpu_flags(str(path))) is IsaClass.AMX


def test_unreadable_or_flagless_cpuinfo_is_baseline(tmp_path):
    assert cpu_flags(str(tmp_path / "missing")) == set()
    assert flags_of("processor\t: 0\nmodel name\t: something\n") == frozenset()
    assert cpu_isa_of(set()) == CpuIsa(IsaClass.BASELINE, False)
