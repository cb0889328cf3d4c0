"""The tracking-core benchmark stays importable and reports every figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parent.parent.parent / "bench" / "bench_agents.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_agents", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_reports_positive_classification_rates() -> None:
    figures = load_bench().run()

    assert figures["classify_cold_per_s"] > 0
    assert figures["classify_cached_per_s"] > figures["classify_cold_per_s"]
    assert figures["token_verify_per_s"] > 0


def test_the_benchmark_agents_are_all_different() -> None:
    agents = load_bench().distinct_agents(2_000)

    assert len(set(agents)) == 2_000
