"""bench/scale.py end to end at a tiny size: every stage runs in its own process and lands in the JSON/table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_of_the_scale_benchmark_runs_and_is_recorded(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), "--sizes", "tiny", "--steps", "3",
                           "--work", str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["synthetic", "generate", "train:sasrec_ce", "train:sasrec_sampled_ce",
                                          "train:bert4rec", "evaluate", "recommend", "export"]
    assert all(r["ok"] and r["seconds"] > 0 and r["peak_rss_mb"] > 50 for r in rows)
    by_stage = {r["stage"]: r for r in rows}
    assert by_stage["train:sasrec_ce"]["steps"] == 3 and by_stage["train:bert4rec"]["rate"] > 0
    assert by_stage["evaluate"]["scored_users"] == 300 and 0 <= by_stage["evaluate"]["full_ndcg10"] <= 1
    recs = (tmp_path / "work" / "tiny" / "run_sasrec_ce" / "recommendations.csv").read_text().splitlines()
    assert recs[0].startswith("user,rank,item,score") and len(recs) == 1 + 300 * 10
    assert by_stage["export"]["latency_ms_p50"] > 0
    table = out.with_suffix(".md").read_text()
    assert table.count("| tiny |") == len(rows)


def test_the_largest_catalogue_skips_full_softmax_models_and_samples_users():
    sys.path.insert(0, str(REPO / "bench"))
    import scale

    specs = scale.plan("catalog1m", scale.STAGES, Path("/tmp/w"), 10, 10_000)
    trained = [s["model"] for s in specs if s["stage"] == "train" and "skipped" not in s]
    skipped = [s["model"] for s in specs if "skipped" in s]
    assert trained == ["sasrec_sampled_ce"] and sorted(skipped) == ["bert4rec", "sasrec_ce"]
    assert {s["users"] for s in specs if s["stage"] in ("evaluate", "recommend")} == {10_000}
    assert all(s["run"].endswith("run_sasrec_sampled_ce") for s in specs if s["stage"] == "export")
