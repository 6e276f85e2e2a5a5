"""Smoke test of bench/bench_ng_ecall.py: a short interleaved run carries each call over the transport the
network offered and measures every call; no figure is judged here (timing belongs in `python -m bench`)."""

from __future__ import annotations

from bench.bench_ng_ecall import interleaved, measure, p99_contender, percentiles


async def test_each_call_goes_over_the_offered_transport_and_is_measured() -> None:
    assert interleaved(2) == ["ng", "cs", "ng", "cs"]
    latencies = await measure(interleaved(2))  # raises when the service chose another transport
    assert {transport: len(seconds) for transport, seconds in latencies.items()} == {"ng": 2, "cs": 2}
    assert all(seconds > 0 for values in latencies.values() for seconds in values)
    p50, p99 = percentiles(latencies["ng"])
    assert 0 < p50 <= p99


async def test_the_suite_contender_runs_one_transport_alone() -> None:
    assert await p99_contender("cs", 1)() > 0
