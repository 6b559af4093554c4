"""The benchmarks are not run by the suite, but they must keep importing what the code offers."""

import importlib

import pytest


@pytest.mark.parametrize("name", ["bench_receive", "bench_send", "bench_tls", "bench_dataset_check"])
def test_each_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None))
