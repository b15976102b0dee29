"""gozaru.build_info() and `gozaru info --system`: the facts it reports match the machine and follow set_num_threads."""
import subprocess
import sys

import numpy as np

import gozaru as gz

KEYS = ("cpu_model", "cpu_features", "blas", "blas_version", "blas_corename", "blas_threads", "threads",
        "openmp_library", "backends_built", "precisions")


def cpuinfo_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_build_info_reports_blas_cpu_and_backends():
    info = gz.build_info()
    for k in KEYS:
        assert k in info, k
    assert "cpu" in info["backends_built"] and info["precisions"][0] == "fp32"
    # bf16 is offered exactly when the build has its library and the CPU the instructions (csrc/precision.h)
    hw = info["cpu_features"]["avx512_bf16"] or info["cpu_features"]["amx_bf16"]
    assert info["bf16"]["usable"] == (info["bf16"]["built"] and hw)
    assert ("bf16" in info["precisions"]) == info["bf16"]["usable"] and "bf16-emulated" in info["precisions"]
    if info["blas"] == "scipy-openblas32":
        assert info["blas_library"].endswith("libscipy_openblas.so")
        assert info["blas_config"].startswith("OpenBLAS ") and info["blas_corename"]
        assert info["blas_corename"] in info["blas_config"]
        assert info["blas_version"].startswith("0.3.")
    flags = cpuinfo_flags()
    if flags:  # Linux: the C-side detection agrees with the kernel's view
        assert info["cpu_features"]["avx2"] == ("avx2" in flags)
        assert info["cpu_features"]["avx512f"] == ("avx512f" in flags)
        assert info["cpu_features"]["amx_bf16"] == ("amx_bf16" in flags)


def test_blas_threads_follow_set_num_threads_and_survive_attention():
    saved = gz.get_num_threads()
    try:
        for n in (1, 2):  # (the second leaves 2 threads set for the model step below)
            gz.set_num_threads(n)
            info = gz.build_info()
            assert info["threads"] == n
            if info["blas"] == "scipy-openblas32":
                assert info["blas_threads"] == n
        # attention runs BLAS single-threaded inside its OpenMP loop and must restore the BLAS count after
        m = gz.Model(gz.preset("tiny"), seed=0)
        m.train_only(m.names)
        tokens = np.random.default_rng(0).integers(0, m.config.vocab_size, (2, 64))
        m.loss(tokens, tokens)
        m.backward()
        info = gz.build_info()
        if info["blas"] == "scipy-openblas32":
            assert info["blas_threads"] == 2
            # the step's GEMMs are large enough to thread; their jobs ran on gozaru's OpenMP threads
            assert info["blas_parallel_calls_on_openmp"] > 0
    finally:
        gz.set_num_threads(saved)


def test_cli_info_system_prints_the_block():
    out = subprocess.run([sys.executable, "-m", "gozaru", "info", "--system"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for k in ("cpu_model", "blas_corename", "blas_threads", "backends_built"):
        assert f"{k}:" in out.stdout
    bare = subprocess.run([sys.executable, "-m", "gozaru", "info"], capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0 and "--system" in bare.stderr
