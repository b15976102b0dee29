"""The test-only module of CPU ops on NumPy arrays (csrc/testops), built by scripts/run_tests.sh.

It is not part of the gozaru package: build it next to the checkout with
    GOZARU_TEST_OPS=only python3 setup.py build_ext --inplace
"""
try:
    import _gozaru_testops as ops
except ImportError as e:  # a clear message rather than a bare ModuleNotFoundError
    raise ImportError("_gozaru_testops is not built: run `GOZARU_TEST_OPS=only python3 setup.py build_ext "
                      "--inplace` (scripts/run_tests.sh and `make test` do)") from e

__all__ = ["ops"]
