"""The CPU description in the benchmarks' environment lines names the vector extensions."""

from __future__ import annotations

from easerve.artifacts.machine import describe_cpu

AVX512_VNNI = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni

processor\t: 1
model name\t: Other CPU
flags\t\t: fpu sse2
"""

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_names_the_first_processor_and_its_vector_extensions():
    assert describe_cpu(AVX512_VNNI) == "AMD EPYC (avx2/avx512f/avx512_vnni)"


def test_tells_two_cpus_of_one_model_name_apart():
    assert describe_cpu(AVX2_ONLY) == "AMD EPYC (avx2)"
    assert describe_cpu("model name\t: Old CPU\nflags\t\t: fpu sse2\n") == "Old CPU (no AVX2)"
