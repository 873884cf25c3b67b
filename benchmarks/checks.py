"""Reproduction checks for ``benchmarks/run.py --check``: rerun seeds compared with the recorded result of their row
(the same seed's value when the record has it, else the row's mean ± sd), without touching that result. Every check
is kept in ``results/checks.json`` (one entry per spec, row and seed; a later check replaces an earlier one) and
drawn as the table between ``<!-- checks -->`` and ``<!-- /checks -->`` in benchmarks/README.md."""
from __future__ import annotations

import fcntl
import json
import math
import re
import time
from pathlib import Path
from typing import Callable

REGION = re.compile(r"^<!-- checks -->\n.*?^<!-- /checks -->$", re.S | re.M)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(spec: str, row: str, old: dict, new: dict[str, dict], command: str, metric: str | None,
            test_informed: bool = False) -> list[dict]:
    """One entry per new seed: for every numeric key the record also holds, now against recorded
    (``test_informed``: the recorded numbers were measured after a choice informed by that test data)."""
    entries = []
    summary = old.get("summary", {})
    for s, m in new.items():
        seed_rec = (old.get("seeds") or {}).get(s) or {}
        cmp = {}
        for k, v in m.items():
            if not _num(v):
                continue
            if _num(seed_rec.get(k)):
                cmp[k] = {"now": v, "recorded": seed_rec[k], "as": "same seed"}
            elif _num(summary.get(k, {}).get("mean")):
                cmp[k] = {"now": v, "recorded": summary[k]["mean"], "sd": summary[k].get("sd"), "as": "mean"}
        entries.append({"spec": spec, "row": row, "seed": int(s), "command": command,
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "recorded_source": old.get("source"), "test_informed": test_informed, "metric": metric,
                        "compare": cmp, "now": m})
    return entries


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def record(entries: list[dict], path: Path, readme: Path, keys: Callable) -> None:
    """Merge ``entries`` into ``path`` (under a lock: two runners may finish at once) and redraw the README table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = {(e["spec"], e["row"], e["seed"]) for e in entries}
        allc = [e for e in load(path) if (e["spec"], e["row"], e["seed"]) not in done] + entries
        allc.sort(key=lambda e: (e["spec"], e["row"], e["seed"]))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(allc, indent=1, default=float) + "\n")
        tmp.replace(path)
        text = readme.read_text()
        if REGION.search(text):
            readme.write_text(REGION.sub(lambda _: f"<!-- checks -->\n{render(allc, keys)}\n<!-- /checks -->",
                                         text, count=1))


def _recorded(c: dict, test_informed: bool = False) -> str:
    out = f"{c['recorded']:.4g}"
    if c["as"] == "mean":
        sd = c.get("sd")
        out += (f" ± {sd:.2g}" if _num(sd) and not math.isnan(sd) else "") + " (mean)"
    return out + (", test-informed" if test_informed else "")


def render(checks: list[dict], keys: Callable) -> str:
    """The table: per check its row's metric (else the first two keys its table shows) now against recorded."""
    lines = ["| spec | row | seed | value | now | recorded | checked |", "|---|---|---|---|---|---|---|"]
    for e in checks:
        shown = [e["metric"]] if e.get("metric") in e["compare"] else keys(e["spec"], e["compare"])
        for k in shown:
            c = e["compare"][k]
            rec = _recorded(c, e.get("test_informed"))
            lines.append(f"| {e['spec']} | {e['row']} | {e['seed']} | {k} | {c['now']:.4g} | {rec} | {e['date'][:10]} |")
    return "\n".join(lines)


def show(entries: list[dict]) -> None:
    for e in entries:
        print(f"check {e['spec']}/{e['row']} seed {e['seed']}:")
        for k, c in e["compare"].items():
            print(f"  {k:32s} now {c['now']:.4g}   recorded {_recorded(c)}")
