"""Findings memory: the process-wide budget, the per-class cap, and what is counted beyond them."""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter

from classifiers.findings import DIGEST_BYTES, SEVERITY_HIGH, SKETCH_BYTES, FindingLimits, Findings, FindingsBudget

KEY = b"0123456789abcdef"
SENSITIVE = {"cn_mobile": False, "cn_resident_id": True}


def mobiles(start: int, n: int) -> list[str]:
    return [f"138{i:08d}" for i in range(start, start + n)]


def flow(budget: FindingsBudget, limits: FindingLimits = FindingLimits()) -> Findings:
    return Findings(limits, SENSITIVE, KEY, budget=budget)


def test_within_budget_counts_are_exact_and_memory_is_charged():
    budget = FindingsBudget(1000 * DIGEST_BYTES)
    f = flow(budget)
    for value in mobiles(0, 300) * 2:
        f.add("cn_mobile", value, "high")
    assert f.count("cn_mobile") == 300
    assert budget.used == f.held == 300 * DIGEST_BYTES
    entry = f.event_fields()["matches"][0]
    assert entry["count"] == 300 and "capped" not in entry and "count_min" not in entry
    assert not budget.anomalies


def test_budget_reached_values_are_estimated_not_dropped():
    anomalies: Counter[str] = Counter()
    budget = FindingsBudget(1000 * DIGEST_BYTES, anomalies)
    first, second = flow(budget), flow(budget)
    for value in mobiles(0, 1000):
        first.add("cn_mobile", value, "high")
    assert budget.used == 1000 * DIGEST_BYTES
    for value in mobiles(10_000, 5000):
        second.add("cn_mobile", value, "high")
    entry = second.event_fields()["matches"][0]
    assert entry["capped"] is True and entry["count_min"] == 0
    assert abs(entry["count"] - 5000) <= 0.2 * 5000          # HyperLogLog, 256 registers
    assert anomalies == Counter({"limit.findings_memory": 1})  # once per class and flow
    assert budget.used == 1000 * DIGEST_BYTES + SKETCH_BYTES
    assert first.count("cn_mobile") == 1000                   # the earlier flow stays exact


def test_values_already_remembered_are_not_counted_again_past_the_budget():
    budget = FindingsBudget(100 * DIGEST_BYTES)
    f = flow(budget)
    held = mobiles(0, 100)
    for value in held:
        f.add("cn_mobile", value, "high")
    for value in held * 3:                 # repeats of remembered values: exact, no overflow
        f.add("cn_mobile", value, "high")
    assert f.count("cn_mobile") == 100 and "capped" not in f.event_fields()["matches"][0]
    extra = mobiles(500, 40)
    for value in extra * 5 + held:         # 40 new values sent 5 times each, and the old ones again
        f.add("cn_mobile", value, "high")
    entry = f.event_fields()["matches"][0]
    assert entry["count_min"] == 100
    assert 100 + 36 <= entry["count"] <= 100 + 44            # linear counting: near-exact when small


def test_flood_of_flows_stays_within_the_budget():
    anomalies: Counter[str] = Counter()
    budget = FindingsBudget(2000 * DIGEST_BYTES, anomalies)
    live = []
    for n in range(200):                   # 200 flows x 50 values: 5x the budget
        f = flow(budget)
        for value in mobiles(n * 50, 50):
            f.add("cn_mobile", value, "high")
        live.append(f)
    sketched = sum(1 for f in live if f.by_class["cn_mobile"].sketch is not None)
    assert budget.used == 2000 * DIGEST_BYTES + sketched * SKETCH_BYTES
    assert sum(len(f.by_class["cn_mobile"].digests) for f in live) == 2000
    assert anomalies["limit.findings_memory"] == sketched == 160
    total = sum(f.count("cn_mobile") for f in live)
    assert abs(total - 10_000) <= 0.1 * 10_000


def test_release_and_garbage_collection_give_memory_back():
    budget = FindingsBudget(100 * DIGEST_BYTES)
    f = flow(budget)
    for value in mobiles(0, 150):
        f.add("cn_mobile", value, "high")
    assert budget.used == 100 * DIGEST_BYTES + SKETCH_BYTES
    f.release()
    assert budget.used == 0 and f.held == 0 and f.count("cn_mobile") == 0
    f.release()                            # idempotent
    assert budget.used == 0
    g = flow(budget)
    for value in mobiles(0, 100):
        g.add("cn_mobile", value, "high")
    assert g.count("cn_mobile") == 100 and "capped" not in g.event_fields()["matches"][0]
    del g                                  # a caller that forgot release()
    gc.collect()
    assert budget.used == 0


def test_per_class_cap_also_estimates_and_is_counted():
    budget = FindingsBudget()
    f = flow(budget, FindingLimits(max_distinct=10, bulk_threshold=100))
    for n, value in enumerate(mobiles(0, 400)):
        f.add("cn_mobile", value, "high")
        f.add("cn_resident_id", f"11010519800101{n:04d}", "high")   # validity is not Findings' job
    fields = f.event_fields()
    by_class = {m["class"]: m for m in fields["matches"]}
    for entry in by_class.values():
        assert entry["capped"] is True and entry["count_min"] == 10
        assert abs(entry["count"] - 400) <= 0.2 * 400
    assert budget.anomalies == Counter({"limit.findings_distinct": 2})
    assert fields["severity"] == SEVERITY_HIGH      # sensitive and bulk by the estimate, not by count_min


def test_no_raw_value_in_events_past_the_cap():
    f = flow(FindingsBudget(5 * DIGEST_BYTES))
    values = mobiles(0, 50)
    for value in values:
        f.add("cn_mobile", value, "high")
    text = repr(f.event_fields())
    assert not any(v in text for v in values)


def test_charged_bytes_cover_what_the_digests_really_take():
    budget = FindingsBudget()
    f = flow(budget)
    values = mobiles(0, 40_000)            # made before measuring: the strings are not ours
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for value in values:
            f.add("cn_mobile", value, "high")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert f.count("cn_mobile") == 40_000
    assert grown <= budget.used + 4096    # + the class entry and samples: a fixed few hundred bytes
    f.release()
