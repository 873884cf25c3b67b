"""One runner for every benchmark table: a spec (``benchmarks/specs/NAME.yaml``) names a kind and its rows.

    python benchmarks/run.py benchmarks/specs/NAME.yaml [--only ROW ...] [--seeds S ...] [--parallel 2] [--dry-run]
    python benchmarks/run.py benchmarks/specs/NAME.yaml --table        # only redraw its README table from results
    python benchmarks/run.py NAME --only ROW --seeds S --check         # rerun, compare with the record, keep it

A spec::

    kind: quality                 # a key of KINDS (benchmarks/kinds.py): what one (row, seed) runs and measures
    defaults: {model: gm-wae, data: mnist-5k, split: val}   # merged into every row
    rows:
      - name: rot35               # results/NAME/rot35.json and .csv
        label: "**±35°**"         # the row's text in the table ({label})
        preset: main
        set: [consistency.rotate=35]   # `wae train --set` overrides, today's keys
        seeds: [0, 1, 2]
    table:
      layout: rows                # one line per row; `seeds`: one line per seed of the first row, then `footer`
      columns: [["setting", "{label}"], ["mean ± sd", "{mean val/acc_hungarian .3f} ± {sd val/acc_hungarian .3f}"]]

Cell templates: ``{STAT KEY FMT}`` with STAT one of ``mean``, ``sd`` (sample std, ddof 1), ``min``, ``max``,
``worst`` (the value of the worst seed by the row's ``metric``), ``v`` (the seed's value in a `seeds` layout, the
only seed's otherwise) or ``sN`` (seed N's value); FMT a Python format (``.3f``, ``,.0f``) or ``mmss``; and
``mins`` (``2 min 59 s``) or ``min1`` (minutes, one decimal); a last token ``@ROW`` reads another row of the spec;
``{label}``, ``{seed}``, ``{seeds}``, ``{worst_seed}``, ``{n}``. A missing value prints as ``–``. A row's ``cells``
replace the templates of the columns they name.

Each run merges its seeds into ``benchmarks/results/SPEC/ROW.json`` (the row, every seed's metrics, the summary)
and ``.csv``; seeds of an earlier run are kept only when the row's settings are unchanged. The spec's table in
benchmarks/README.md, between ``<!-- table: SPEC -->`` and ``<!-- /table -->``, is then redrawn from the results.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import checks  # noqa: E402
from kinds import KINDS  # noqa: E402

SPECS, RESULTS, README = HERE / "specs", HERE / "results", HERE / "README.md"
COMMON = {"name", "label", "seeds", "set", "data", "model", "preset", "split", "metric", "cells", "test_informed"}
SPLITS = {"val", "test", "all"}
TOP = {"kind", "title", "defaults", "rows", "table"}
TABLE = {"layout", "columns", "footer", "transpose"}
STATS = {"mean", "sd", "min", "max", "worst", "v"}
WORDS = {"label", "seed", "seeds", "worst_seed", "n"}
FIELD = re.compile(r"\{([^{}]+)\}")


class SpecError(ValueError):
    pass


# ---- specs -------------------------------------------------------------------------------------------------------

def load_spec(path) -> dict:
    """The spec at ``path``, checked (SpecError names what is wrong), its defaults merged into every row."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such spec (they are in {SPECS.relative_to(HERE.parent)}/)")
    spec = yaml.safe_load(path.read_text())
    where = path.name
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: not a mapping")
    if set(spec) - TOP:
        raise SpecError(f"{where}: unknown keys {sorted(set(spec) - TOP)} (allowed: {sorted(TOP)})")
    if spec.get("kind") not in KINDS:
        raise SpecError(f"{where}: kind {spec.get('kind')!r} is not one of {sorted(KINDS)}")
    kind = KINDS[spec["kind"]]
    rows = spec.get("rows")
    if not isinstance(rows, list) or not rows:
        raise SpecError(f"{where}: `rows` must be a non-empty list")
    merged, names = [], set()
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise SpecError(f"{where}: row {i} is not a mapping")
        r = {**(spec.get("defaults") or {}), **r}
        name = r.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name) or name in names:
            raise SpecError(f"{where}: row {i}: `name` must be a new lower-case file name, not {name!r}")
        names.add(name)
        unknown = set(r) - COMMON - set(kind.keys)
        if unknown:
            raise SpecError(f"{where}: row {name}: unknown keys {sorted(unknown)} (kind {spec['kind']} takes "
                            f"{sorted(COMMON | set(kind.keys))})")
        if r.get("split", "test") not in SPLITS:
            raise SpecError(f"{where}: row {name}: split must be one of {sorted(SPLITS)}")
        seeds = r.setdefault("seeds", [0])
        if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
            raise SpecError(f"{where}: row {name}: `seeds` must be a list of integers")
        sets = r.setdefault("set", [])
        if not (isinstance(sets, list) and all(isinstance(s, str) and "=" in s for s in sets)):
            raise SpecError(f"{where}: row {name}: `set` must be a list of key=value strings")
        merged.append(r)
    spec["rows"] = merged
    spec["name"] = path.stem
    spec["path"] = path.resolve().relative_to(HERE.parent).as_posix() if HERE.parent in path.resolve().parents \
        else str(path)
    check_table(spec, where)
    return spec


def check_table(spec: dict, where: str) -> None:
    t = spec.get("table")
    if not isinstance(t, dict) or set(t) - TABLE:
        raise SpecError(f"{where}: `table` must be a mapping with keys among {sorted(TABLE)}")
    cols = t.get("columns")
    if not (isinstance(cols, list) and cols and all(isinstance(c, list) and len(c) == 2 for c in cols)):
        raise SpecError(f"{where}: table.columns must be a list of [header, template] pairs")
    heads = [c[0] for c in cols]
    layout = t.get("layout", "rows")
    if layout not in ("rows", "seeds"):
        raise SpecError(f"{where}: table.layout must be rows or seeds")
    templates = [c[1] for c in cols] + [c for line in t.get("footer") or [] for c in line]
    for line in t.get("footer") or []:
        if len(line) != len(cols):
            raise SpecError(f"{where}: a footer line has {len(line)} cells for {len(cols)} columns")
    for r in spec["rows"]:
        cells = r.get("cells") or {}
        if set(cells) - set(heads):
            raise SpecError(f"{where}: row {r['name']}: `cells` names no column: {sorted(set(cells) - set(heads))}")
        templates += list(cells.values())
    for tpl in templates:
        for f in FIELD.findall(str(tpl)):
            parts = f.split()
            if parts[0] in WORDS and len(parts) == 1:
                continue
            if parts[-1].startswith("@"):
                if parts[-1][1:] not in {r["name"] for r in spec["rows"]}:
                    raise SpecError(f"{where}: template field {{{f}}} names no row of the spec")
                parts = parts[:-1]
            if len(parts) not in (2, 3) or not (parts[0] in STATS or re.fullmatch(r"s-?\d+", parts[0])):
                raise SpecError(f"{where}: bad template field {{{f}}} (want {{STAT KEY [FMT]}})")


def all_specs() -> list[Path]:
    return sorted(SPECS.glob("*.yaml"))


# ---- results -----------------------------------------------------------------------------------------------------

def summarise(seeds: dict[str, dict], metric: str | None) -> tuple[dict, str | None]:
    """Per numeric key over the seeds: mean, sample std (ddof 1; nan for one seed), min, max, n and the value of
    the worst seed (lowest ``metric``); and that seed."""
    worst = None
    if metric and any(metric in m for m in seeds.values()):
        worst = min((s for s in seeds if metric in seeds[s]), key=lambda s: seeds[s][metric])
    keys = sorted({k for m in seeds.values() for k, v in m.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    out = {}
    for k in keys:
        a = np.array([float(m[k]) for m in seeds.values() if k in m and isinstance(m[k], (int, float))])
        out[k] = {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
                  "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}
        if worst is not None and k in seeds[worst]:
            out[k]["worst"] = float(seeds[worst][k])
    return out, worst


def result_path(spec_name: str, row: str, ext: str = "json") -> Path:
    return RESULTS / spec_name / f"{row}.{ext}"


def load_result(spec_name: str, row: str) -> dict | None:
    p = result_path(spec_name, row)
    return json.loads(p.read_text()) if p.exists() else None


def settings(row: dict) -> dict:
    """What must be equal for seeds of two runs to be merged: the row without its seeds and its table text."""
    return {k: v for k, v in row.items() if k not in ("seeds", "label", "cells", "test_informed")}


def save_result(spec: dict, row: dict, new: dict[str, dict], metric: str | None, command: str) -> dict:
    old = load_result(spec["name"], row["name"])
    seeds = {}
    if old and old.get("source") != "run":
        print(f"{result_path(spec['name'], row['name'])}: replacing a result {old.get('source')}", file=sys.stderr)
    elif old:
        if settings(old["row"]) != settings(row):
            diff = sorted(k for k in set(settings(old["row"])) | set(settings(row))
                          if old["row"].get(k) != row.get(k))
            raise SpecError(f"{result_path(spec['name'], row['name'])} holds seeds of other settings ({diff}); "
                            "move it away or rename the row")
        seeds = dict(old.get("seeds") or {})
    seeds.update(new)
    seeds = dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))
    summary, worst = summarise(seeds, metric)
    res = {"spec": spec["name"], "row": row, "kind": spec["kind"], "command": command, "metric": metric,
           "source": "run", "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seeds": seeds,
           "worst_seed": worst, "summary": summary}
    p = result_path(spec["name"], row["name"])
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(res, indent=1, sort_keys=False, default=float) + "\n")
    write_csv(res, p.with_suffix(".csv"))
    return res


def check_result(spec: dict, row: dict, new: dict[str, dict], command: str) -> list[dict]:
    """Compare freshly run seeds with the recorded result, leaving it alone (:mod:`checks`)."""
    old = load_result(spec["name"], row["name"]) or {}
    entries = checks.compare(spec["name"], row["name"], old, new, command + " --check",
                             KINDS[spec["kind"]].metric(row), bool(row.get("test_informed")))
    checks.record(entries, RESULTS / "checks.json", README, table_keys)
    checks.show(entries)
    return entries


def table_keys(spec_name: str, have, n: int = 2) -> list[str]:
    """The first ``n`` keys of ``have`` that the spec's table shows, in column order (timings last)."""
    try:
        t = load_spec(SPECS / f"{spec_name}.yaml")["table"]
    except (SpecError, OSError):
        return list(have)[:n]
    shown = []
    for _, tpl in t["columns"]:
        for f in FIELD.findall(str(tpl)):
            parts = f.split()
            if len(parts) >= 2 and parts[1] in have and parts[1] not in shown:
                shown.append(parts[1])
    shown.sort(key=lambda k: k.endswith(("_s", "seconds")))
    return shown[:n] or list(have)[:n]


def render_checks() -> str:
    return checks.render(checks.load(RESULTS / "checks.json"), table_keys)


def write_csv(res: dict, path: Path) -> None:
    """One line per seed, then mean, sd, min, max (and the worst seed's values), numeric keys only."""
    keys = list(res["summary"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", *keys])
        for s, m in res["seeds"].items():
            w.writerow([s, *[m.get(k, "") for k in keys]])
        for stat in ("mean", "sd", "min", "max", "worst"):
            w.writerow([stat, *[res["summary"][k].get(stat, "") for k in keys]])


# ---- tables ------------------------------------------------------------------------------------------------------

def fmt(v, spec: str | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if spec == "mmss":
        return f"{int(v // 60)}:{int(round(v % 60)):02d}"
    if spec == "mins":
        return f"{int(v // 60)} min {int(round(v % 60))} s"
    if spec == "min1":
        return f"{v / 60:.1f}"
    s = format(v, spec or "")
    return s.replace("-", "−") if s.startswith("-") else s


def value(res: dict | None, stat: str, key: str, seed: str | None):
    if res is None:
        return None
    if stat == "v" or stat.startswith("s") and stat != "sd":
        s = seed if stat == "v" else stat[1:]
        if s is None and len(res.get("seeds") or {}) == 1:
            s = next(iter(res["seeds"]))
        return (res.get("seeds") or {}).get(str(s), {}).get(key)
    return res.get("summary", {}).get(key, {}).get(stat)


def cell(template: str, row: dict, results: dict, seed: str | None = None) -> str:
    res = results.get(row["name"])

    def sub(m):
        parts = m.group(1).split()
        if parts[0] == "label":
            return str(row.get("label", row["name"]))
        if parts[0] == "seed":
            return str(seed)
        if parts[0] == "seeds":
            ran = (res or {}).get("source") == "run" and res.get("seeds")
            return " ".join(ran) if ran else " ".join(map(str, row["seeds"]))
        if parts[0] == "worst_seed":
            return str((res or {}).get("worst_seed") if (res or {}).get("worst_seed") is not None else "–")
        if parts[0] == "n":
            return str(len((res or {}).get("seeds") or {}))
        r = res
        if parts[-1].startswith("@"):
            r, parts = results.get(parts[-1][1:]), parts[:-1]
        return fmt(value(r, parts[0], parts[1], seed), parts[2] if len(parts) > 2 else None)
    return FIELD.sub(sub, str(template))


def render(spec: dict, results: dict[str, dict | None] | None = None) -> str:
    """The spec's table from its results (``results``: row name → result; default: the files)."""
    if results is None:
        results = {r["name"]: load_result(spec["name"], r["name"]) for r in spec["rows"]}
    t = spec["table"]
    heads = [c[0] for c in t["columns"]]
    lines = []
    if t.get("layout", "rows") == "seeds":
        row = spec["rows"][0]
        for s in (results.get(row["name"]) or {}).get("seeds") or {}:
            lines.append([cell(c[1], row, results, s) for c in t["columns"]])
        for f in t.get("footer") or []:
            lines.append([cell(c, row, results) for c in f])
    else:
        for row in spec["rows"]:
            over = row.get("cells") or {}
            lines.append([cell(over.get(h, tpl), row, results) for h, tpl in t["columns"]])
    grid = [heads, *lines]
    if t.get("transpose"):
        grid = [list(c) for c in zip(*grid)]
    def line(cells):
        return "|" + "".join(f" {c} |" if c else " |" for c in cells)
    return "\n".join([line(grid[0]), "|" + "---|" * len(grid[0]), *map(line, grid[1:])])


def command_line(spec: dict) -> str:
    return f"`python benchmarks/run.py benchmarks/specs/{spec['name']}.yaml`"


def region(spec: dict, results=None) -> str:
    return f"<!-- table: {spec['name']} -->\n{command_line(spec)}\n\n{render(spec, results)}\n<!-- /table -->"


def marked(text: str, name: str) -> re.Pattern:
    return re.compile(rf"^<!-- table: {re.escape(name)} -->\n.*?^<!-- /table -->$", re.S | re.M)


def update_readme(spec: dict, readme: Path = README) -> bool:
    """Redraw the spec's marked table in ``readme``; False when the README has no region for it."""
    text = readme.read_text()
    pat = marked(text, spec["name"])
    if not pat.search(text):
        return False
    readme.write_text(pat.sub(lambda _: region(spec), text, count=1))
    return True


# ---- running -----------------------------------------------------------------------------------------------------

def launch(cmd: list[str], core: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if core is not None:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_row(spec: dict, row: dict, seeds: list[int], out: Path, parallel: int, dry: bool,
            check: bool = False) -> dict | None:
    kind = KINDS[spec["kind"]]
    jobs = []
    for s in seeds:
        run = out / spec["name"] / f"{row['name']}-s{s}"
        jobs.append((s, run, kind.command(row, s, run)))
    shown = f"python benchmarks/run.py {spec['path']} --only {row['name']} --seeds {' '.join(map(str, seeds))}"
    if dry:
        for s, run, cmd in jobs:
            print(" ".join(map(shlex.quote, cmd)) if cmd else
                  f"# in process ({spec['kind']}, seed {s} → {run}): {json.dumps(settings(row))}")
        return None
    metrics: dict[str, dict] = {}
    todo = [j for j in jobs if j[2] is None]  # in-process kinds: one after another
    for s, run, _ in todo:
        t0 = time.time()
        metrics[str(s)] = {**kind.collect(row, s, run), "wall_s": time.time() - t0}
        print(f"{row['name']} seed {s}: done in {time.time() - t0:.0f} s", flush=True)
    pending = [j for j in jobs if j[2] is not None]
    cores = list(range(parallel)) if parallel > 1 else [None]
    running: list = []
    while pending or running:
        while pending and len(running) < len(cores):
            free = [c for c in cores if c not in [r[3] for r in running]][0]
            s, run, cmd = pending.pop(0)
            run.parent.mkdir(parents=True, exist_ok=True)
            running.append((s, run, launch(cmd, free), free, time.time()))
        s, run, proc, _, t0 = running.pop(0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(err[-3000:], file=sys.stderr)
            raise SystemExit(f"{row['name']} seed {s} failed (exit {proc.returncode})")
        metrics[str(s)] = {**kind.collect(row, s, run), "wall_s": time.time() - t0}
        print(f"{row['name']} seed {s}: done in {time.time() - t0:.0f} s", flush=True)
    if check:
        check_result(spec, row, metrics, shown)
        return None
    return save_result(spec, row, metrics, kind.metric(row), shown)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="benchmarks/specs/NAME.yaml (or NAME)")
    p.add_argument("--only", nargs="+", metavar="ROW", help="run these rows only")
    p.add_argument("--seeds", type=int, nargs="+", help="instead of each row's seeds")
    p.add_argument("--parallel", type=int, default=1, help="seeds run at once, one core and one thread each")
    p.add_argument("--out", default="runs/bench", help="where the runs go (results go to benchmarks/results)")
    p.add_argument("--dry-run", action="store_true", help="print what would run")
    p.add_argument("--table", action="store_true", help="only redraw the README table from the results")
    p.add_argument("--check", action="store_true",
                   help="rerun and compare with the recorded result, leaving it and the table as they are "
                        "(results/checks.json)")
    a = p.parse_args(argv)
    path = Path(a.spec) if a.spec.endswith(".yaml") else SPECS / f"{a.spec}.yaml"
    try:
        spec = load_spec(path)
        rows = spec["rows"]
        if a.only:
            missing = set(a.only) - {r["name"] for r in rows}
            if missing:
                raise SpecError(f"{path.name}: no row {sorted(missing)} (rows: {[r['name'] for r in rows]})")
            rows = [r for r in rows if r["name"] in a.only]
        if not a.table:
            for row in rows:
                res = run_row(spec, row, a.seeds or row["seeds"], Path(a.out), a.parallel, a.dry_run, a.check)
                if res:
                    print(json.dumps({"row": row["name"], "worst_seed": res["worst_seed"],
                                      **{k: round(v["mean"], 4) for k, v in res["summary"].items()}}))
        if a.dry_run or a.check:
            return 0
        print(render(spec))
        if not update_readme(spec):
            print(f"(benchmarks/README.md has no <!-- table: {spec['name']} --> region)", file=sys.stderr)
    except SpecError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
