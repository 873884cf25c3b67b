"""One-off (issue 35): read today's numbers out of the marked tables of benchmarks/README.md into
benchmarks/results/SPEC/ROW.json, by matching each cell against its spec template. The results carry
``"source": "imported from benchmarks/README.md"``: values at the precision the README printed them, summaries as
printed (some ddof 0, from before 2026-12-04). Run once; the runner's own runs replace them row by row."""
from __future__ import annotations

import json
import re
import sys

import run

NUM = r"[−-]?[\d,]*\.?\d+(?:e[-+]?\d+)?|\d+:\d\d|\d+ min \d+ s|–"


def number(s: str, f: str | None):
    if s == "–":
        return None
    if f == "mmss":
        m, sec = s.split(":")
        return int(m) * 60 + int(sec)
    if f == "mins":
        m, sec = re.findall(r"\d+", s)
        return int(m) * 60 + int(sec)
    v = float(s.replace("−", "-").replace(",", ""))
    return v * 60 if f == "min1" else v


def pattern(template: str):
    fields, out, pos = [], "", 0
    for m in run.FIELD.finditer(template):
        out += re.escape(template[pos:m.start()])
        parts = m.group(1).split()
        ref = parts.pop()[1:] if parts[-1].startswith("@") else None
        if parts[0] == "label" or parts[0] == "seeds":
            out += "(.*?)"
        elif parts[0] in ("seed", "worst_seed", "n"):
            out += r"(-?\d+|–)"
        else:
            out += f"({NUM})"
        fields.append((parts, ref))
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + "$"), fields


def put(results, name, parts, raw, seed):
    if parts[0] in ("label", "n", "seeds", "seed"):
        return
    res = results[name]
    if parts[0] == "worst_seed":
        res["worst_seed"] = None if raw == "–" else int(raw)
        return
    v = number(raw, parts[2] if len(parts) > 2 else None)
    if v is None:
        return
    stat, key = parts[0], parts[1]
    if stat == "v" or re.fullmatch(r"s-?\d+", stat):
        s = seed if stat == "v" else stat[1:]
        res["seeds"].setdefault(str(s), {})[key] = v
    else:
        res["summary"].setdefault(key, {})[stat] = v


def split_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split(" |")]


def import_spec(spec: dict, text: str) -> dict:
    m = run.marked(text, spec["name"]).search(text)
    lines = [ln for ln in m.group(0).splitlines() if ln.startswith("|")][2:]
    grid = [split_cells(ln) for ln in lines]
    t = spec["table"]
    if t.get("transpose"):
        head = [split_cells(ln) for ln in m.group(0).splitlines() if ln.startswith("|")][0]
        grid = [list(c) for c in zip(*([head] + grid))][1:]
    results = {r["name"]: {"spec": spec["name"], "row": r, "kind": spec["kind"], "command": None,
                           "metric": run.KINDS[spec["kind"]].metric(r), "source": "imported from benchmarks/README.md",
                           "seeds": {}, "worst_seed": None, "summary": {}} for r in spec["rows"]}
    if t.get("layout", "rows") == "seeds":
        row = spec["rows"][0]
        n_seed = len(grid) - len(t.get("footer") or [])
        jobs = []
        for cells in grid[:n_seed]:
            seed = None
            for c, (h, tpl) in zip(cells, t["columns"]):
                if tpl == "{seed}":
                    seed = c
            jobs.append((row, cells, [c[1] for c in t["columns"]], seed))
        for cells, f in zip(grid[n_seed:], t.get("footer") or []):
            jobs.append((row, cells, f, None))
    else:
        assert len(grid) == len(spec["rows"]), (spec["name"], len(grid))
        jobs = [(r, cells, [(r.get("cells") or {}).get(h, tpl) for h, tpl in t["columns"]],
                 str(r["seeds"][0]) if len(r["seeds"]) == 1 else None) for r, cells in zip(spec["rows"], grid)]
    for row, cells, templates, seed in jobs:
        assert len(cells) == len(templates), (spec["name"], cells)
        for c, tpl in zip(cells, templates):
            pat, fields = pattern(str(tpl))
            mm = pat.match(c)
            if not mm:
                raise SystemExit(f"{spec['name']}/{row['name']}: cell {c!r} does not match {tpl!r}")
            for (parts, ref), raw in zip(fields, mm.groups()):
                put(results, ref or row["name"], parts, raw, seed)
    return results


def main() -> int:
    text = run.README.read_text()
    for path in run.all_specs():
        spec = run.load_spec(path)
        results = import_spec(spec, text)
        for name, res in results.items():
            p = run.result_path(spec["name"], name)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(res, indent=1) + "\n")
            run.write_csv({**res, "summary": {k: v for k, v in res["summary"].items()}}, p.with_suffix(".csv"))
        if run.render(spec) != "\n".join(ln for ln in run.marked(text, spec["name"]).search(text).group(0)
                                         .splitlines() if ln.startswith("|")):
            print(f"{spec['name']}: the redrawn table differs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
