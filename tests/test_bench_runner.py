"""benchmarks/run.py: every spec loads and has its table in benchmarks/README.md, drawn from its results; tables are
drawn from results as the templates say (values checked on a tiny fake results set)."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod
    spec.loader.exec_module(mod)
    return mod


run = _runner()


def test_every_spec_loads_and_every_readme_table_is_a_spec_region_drawn_from_results():
    specs = [run.load_spec(p) for p in run.all_specs()]
    assert len(specs) >= 20
    text = run.README.read_text()
    names = re.findall(r"^<!-- table: (\S+) -->$", text, flags=re.M)
    assert sorted(names) == sorted(s["name"] for s in specs)  # one region per spec, one spec per region
    for s in specs:
        region = run.marked(text, s["name"]).search(text).group(0)
        assert f"`python benchmarks/run.py benchmarks/specs/{s['name']}.yaml`" in region
        assert region == run.region(s), f"{s['name']}: the README table is not what its results draw"
    checks = re.search(r"^<!-- checks -->\n(.*?)^<!-- /checks -->$", text, flags=re.S | re.M)
    assert checks and checks.group(1).strip() == run.render_checks(), "the checks table is not checks.json's"
    rest = re.sub(r"^<!-- table: \S+ -->\n.*?^<!-- /table -->$", "", text, flags=re.S | re.M)
    rest = rest.replace(checks.group(0), "")
    assert not [ln for ln in rest.splitlines() if ln.startswith("|")], "a table without a spec"


def _spec(tmp_path, text: str) -> dict:
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return run.load_spec(p)


SPEC = """
kind: quality
defaults: {model: gm-wae, split: val, set: [max_steps=10]}
rows:
  - {name: a, label: "**A**", seeds: [0, 1, 2]}
  - name: b
    seeds: [5]
    cells: {"mean ± sd": "{v val/acc .2f} only"}
table:
  columns:
    - ["row", "{label}"]
    - ["s1", "{s1 val/acc .3f}"]
    - ["mean ± sd", "{mean val/acc .3f} ± {sd val/acc .3f}"]
    - ["worst", "{worst val/acc .3f} (seed {worst_seed}), nmi {worst val/nmi .2f}"]
    - ["wall", "{max wall_s mmss} / {min wall_s mins}"]
    - ["elbo", "{mean val/elbo ,.1f}"]
    - ["from b", "{mean val/acc .1f @b}"]
"""


def test_table_values_from_fake_results(tmp_path):
    spec = _spec(tmp_path, SPEC)
    seeds = {"0": {"val/acc": 0.9, "val/nmi": 0.8, "wall_s": 125.0, "val/elbo": -1234.5},
             "1": {"val/acc": 0.7, "val/nmi": 0.6, "wall_s": 61.0, "val/elbo": -1000.0},
             "2": {"val/acc": 0.8, "val/nmi": 0.7, "wall_s": 59.6, "val/elbo": -1100.0}}
    summary, worst = run.summarise(seeds, "val/acc")
    assert worst == "1"
    assert summary["val/acc"]["mean"] == pytest.approx(0.8)
    assert summary["val/acc"]["sd"] == pytest.approx(0.1)  # sample std, ddof 1 (ddof 0 would be 0.0816)
    assert summary["val/nmi"]["worst"] == 0.6 and summary["wall_s"]["max"] == 125.0
    b = {"seeds": {"5": {"val/acc": 0.55}}}
    b["summary"], b["worst_seed"] = run.summarise(b["seeds"], "val/acc")
    assert math.isnan(b["summary"]["val/acc"]["sd"])
    results = {"a": {"seeds": seeds, "summary": summary, "worst_seed": worst}, "b": b}
    lines = run.render(spec, results).splitlines()
    assert lines[0] == "| row | s1 | mean ± sd | worst | wall | elbo | from b |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == ("| **A** | 0.700 | 0.800 ± 0.100 | 0.700 (seed 1), nmi 0.60 | 2:05 / 0 min 60 s | −1,111.5 "
                        "| 0.6 |")
    assert lines[3] == "| b | – | 0.55 only | 0.550 (seed 5), nmi – | – / – | – | 0.6 |"


def test_seeds_layout_footer_transpose_and_readme_region(tmp_path, monkeypatch):
    spec = _spec(tmp_path, """
kind: cluster
rows: [{name: r, data: "npz:x.npz", k: 3, seeds: [3, 4]}]
table:
  layout: seeds
  columns: [["seed", "{seed}"], ["acc", "{v acc_hungarian .2f}"], ["k-means", ""]]
  footer: [["**mean**", "**{mean acc_hungarian .2f}**", "{mean kmeans_acc_hungarian .2f}"]]
""")
    seeds = {"3": {"acc_hungarian": 0.5, "kmeans_acc_hungarian": 0.4}, "4": {"acc_hungarian": 0.7}}
    res = {"seeds": seeds, "summary": run.summarise(seeds, "acc_hungarian")[0]}
    assert run.render(spec, {"r": res}).splitlines()[2:] == ["| 3 | 0.50 | |", "| 4 | 0.70 | |",
                                                             "| **mean** | **0.60** | 0.40 |"]
    spec["table"]["transpose"] = True
    assert run.render(spec, {"r": res}).splitlines() == ["| seed | 3 | 4 | **mean** |", "|---|---|---|---|",
                                                         "| acc | 0.50 | 0.70 | **0.60** |", "| k-means | | | 0.40 |"]
    spec["table"]["transpose"] = False
    # a run writes results/SPEC/ROW.{json,csv}; the README region is redrawn from them and nothing else changes
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    run.save_result(spec, spec["rows"][0], seeds, "acc_hungarian", "cmd")
    saved = json.loads((tmp_path / "results" / "t" / "r.json").read_text())
    assert saved["worst_seed"] == "3" and saved["summary"]["acc_hungarian"]["sd"] == pytest.approx(0.1414, abs=1e-4)
    csv = (tmp_path / "results" / "t" / "r.csv").read_text().splitlines()
    assert csv[0] == "seed,acc_hungarian,kmeans_acc_hungarian" and csv[2] == "4,0.7," and csv[3].startswith("mean,0.6")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table: t -->\nold\n<!-- /table -->\nafter\n")
    assert run.update_readme(spec, readme)
    assert readme.read_text() == ("intro\n<!-- table: t -->\n`python benchmarks/run.py benchmarks/specs/t.yaml`\n\n"
                                  "| seed | acc | k-means |\n|---|---|---|\n| 3 | 0.50 | |\n| 4 | 0.70 | |\n"
                                  "| **mean** | **0.60** | 0.40 |\n<!-- /table -->\nafter\n")
    # seeds of other settings are not merged
    changed = {**spec["rows"][0], "k": 4}
    with pytest.raises(run.SpecError, match=r"other settings \(\['k'\]\)"):
        run.save_result(spec, changed, {"5": {"acc_hungarian": 0.1}}, "acc_hungarian", "cmd")


@pytest.mark.parametrize("text, message", [
    ("kind: nope\nrows: [{name: a}]\ntable: {columns: [[x, y]]}", "kind 'nope' is not one of"),
    ("kind: cluster\nrows: [{name: a, presett: main}]\ntable: {columns: [[x, y]]}", "unknown keys ['presett']"),
    ("kind: cluster\nrows: [{name: a, set: [k_top]}]\ntable: {columns: [[x, y]]}", "key=value"),
    ("kind: cluster\nrows: [{name: a}, {name: a}]\ntable: {columns: [[x, y]]}", "must be a new"),
    ("kind: cluster\nrows: [{name: a}]\ntable: {columns: [[x, '{mean}']]}", "bad template field"),
    ("kind: cluster\nrows: [{name: a, cells: {z: q}}]\ntable: {columns: [[x, y]]}", "names no column"),
])
def test_bad_specs_name_what_is_wrong(tmp_path, text, message):
    with pytest.raises(run.SpecError, match=re.escape(message)):
        _spec(tmp_path, text)


def test_check_compares_with_the_recorded_result_and_leaves_it_alone(tmp_path, monkeypatch):
    spec = _spec(tmp_path, """
kind: cluster
rows: [{name: r, data: "npz:x.npz", k: 3, seeds: [3, 4]}]
table: {columns: [["acc", "{mean acc_hungarian .2f}"]]}
""")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- checks -->\n<!-- /checks -->\n")
    monkeypatch.setattr(run, "README", readme)
    run.save_result(spec, spec["rows"][0], {"3": {"acc_hungarian": 0.5}, "4": {"acc_hungarian": 0.7}},
                    "acc_hungarian", "cmd")
    saved = (tmp_path / "results" / "t" / "r.json").read_text()
    # seed 4 again: compared with seed 4's record; seed 9: with the mean ± sd
    run.check_result(spec, spec["rows"][0], {"4": {"acc_hungarian": 0.68, "new_key": 1.0},
                                             "9": {"acc_hungarian": 0.61}}, "cmd")
    assert (tmp_path / "results" / "t" / "r.json").read_text() == saved
    checks = json.loads((tmp_path / "results" / "checks.json").read_text())
    assert [(c["seed"], c["compare"]["acc_hungarian"]["as"], c["compare"]["acc_hungarian"]["recorded"])
            for c in checks] == [(4, "same seed", 0.7), (9, "mean", pytest.approx(0.6))]
    assert "new_key" not in checks[0]["compare"] and checks[0]["now"]["new_key"] == 1.0
    run.check_result(spec, spec["rows"][0], {"4": {"acc_hungarian": 0.66}}, "cmd")  # replaces, not appends
    checks = json.loads((tmp_path / "results" / "checks.json").read_text())
    assert len(checks) == 2 and checks[0]["now"]["acc_hungarian"] == 0.66
    lines = readme.read_text().splitlines()
    assert lines[4].startswith("| t | r | 4 | acc_hungarian | 0.66 | 0.7 | ")
    assert lines[5].startswith("| t | r | 9 | acc_hungarian | 0.61 | 0.6 ± 0.14 (mean) | ")
    # a row recorded after a choice informed by its test data says so in the table
    run.check_result(spec, {**spec["rows"][0], "test_informed": True}, {"9": {"acc_hungarian": 0.6}}, "cmd")
    assert readme.read_text().splitlines()[5].startswith("| t | r | 9 | acc_hungarian | 0.6 | 0.6 ± 0.14 (mean), "
                                                         "test-informed | ")
