"""The benchmark's goals (bench/goals.toml) and the comparison of two runs'
results (bench/results/*.json, as bench/compare.py writes them).

A run's ratio for a measure is armitage's median over the rounds divided by
CppNix's. Its noise is the min–max spread of the per-round ratios (round i's
armitage figure over round i's CppNix figure). A ratio has regressed when it
is worse than the baseline's (higher, or lower for rates) by more than the
larger of the two runs' spreads. Used by `bench/compare --check` and
`bench/compare.py --diff OLD NEW`; tested by bench/test_goals.py.
"""

import os
import re
import subprocess
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
GOALS_FILE = os.path.join(HERE, "goals.toml")

# Units where a higher figure is better (rates); for every other one lower is.
HIGHER_IS_BETTER = {"/s", "GB/s"}


class GoalsError(Exception):
    pass


def load(path=GOALS_FILE):
    """The goals, checked: each with `what`, exactly one of `max`/`min`,
    `row` and `field` together, and `row` or `build`."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    goals = data.get("goal", [])
    for i, g in enumerate(goals):
        where = f"{os.path.basename(path)}: goal {i + 1} ({g.get('what', '?')})"
        unknown = set(g) - {"what", "row", "field", "build", "max", "min", "enforce"}
        if unknown:
            raise GoalsError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        if "what" not in g:
            raise GoalsError(f"{where}: no `what`")
        if ("max" in g) == ("min" in g):
            raise GoalsError(f"{where}: needs exactly one of `max` and `min`")
        if ("row" in g) != ("field" in g):
            raise GoalsError(f"{where}: `row` and `field` go together")
        if "row" not in g and "build" not in g:
            raise GoalsError(f"{where}: names no measure (`row`/`field` or `build`)")
        if "build" in g and (not isinstance(g["build"], dict) or set(g["build"]) != {"workload", "measure"}):
            raise GoalsError(f"{where}: `build` is {{ workload = ..., measure = ... }}")
        g.setdefault("enforce", True)
    return goals


def bound(goal):
    """('<=', 0.3) or ('>=', 2.0)."""
    return ("<=", goal["max"]) if "max" in goal else (">=", goal["min"])


def met(goal, ratio):
    """Whether `ratio` meets the goal; None when there is no ratio."""
    if ratio is None:
        return None
    op, b = bound(goal)
    return ratio <= b if op == "<=" else ratio >= b


def goal_text(goal, ratio):
    """'<= 0.3: met', '>= 2.0: NOT met', '<= 0.5: n/a'."""
    op, b = bound(goal)
    ok = met(goal, ratio)
    return f"{op} {b}: {'n/a' if ok is None else 'met' if ok else 'NOT met'}"


def build_goals(goals):
    """{(bench/build.py workload, measure name): goal} for build.py's table."""
    return {(g["build"]["workload"], g["build"]["measure"]): g for g in goals if "build" in g}


# --- a run's ratios ------------------------------------------------------------------

def measures(run):
    """{(row key, field): (row, measure)} of a results JSON."""
    return {(r["key"], m["field"]): (r, m) for r in run["rows"] for m in r["measures"]}


def round_ratios(m):
    """The per-round ratios of a measure (rounds where CppNix's figure is not
    above zero left out)."""
    a, c = m["armitage"].get("values"), m["CppNix"].get("values")
    if a and c and len(a) == len(c):
        return [x / y for x, y in zip(a, c) if y > 0 and x > 0]
    # No per-round figures: the widest ratio the min-max allow.
    lo_a, hi_a, lo_c, hi_c = m["armitage"]["min"], m["armitage"]["max"], m["CppNix"]["min"], m["CppNix"]["max"]
    if lo_c <= 0 or lo_a <= 0:
        return []
    return [lo_a / hi_c, hi_a / lo_c]


def spread(m):
    rs = round_ratios(m)
    return max(rs) - min(rs) if rs else 0.0


def ratio_range(m):
    rs = round_ratios(m)
    return (min(rs), max(rs)) if rs else None


def higher_is_better(m):
    return m["unit"] in HIGHER_IS_BETTER


# --- comparing two runs --------------------------------------------------------------

def incompatible(old, new):
    """Why two runs cannot be compared, or None."""
    if old.get("smoke_test") or new.get("smoke_test"):
        which = "the baseline" if old.get("smoke_test") else "the new run"
        return f"{which} is a --quick smoke test, not for comparison"
    if old.get("sizes") != new.get("sizes"):
        diff = sorted(k for k in set(old.get("sizes", {})) | set(new.get("sizes", {}))
                      if old.get("sizes", {}).get(k) != new.get("sizes", {}).get(k))
        return f"the runs used different sizes ({', '.join(diff)})"
    return None


def compare(old, new):
    """One entry per measure of either run, in the new run's order (then the
    baseline's rows the new run lacks): a dict with row, title, name, field,
    old/new ratio, old/new (min, max) of the per-round ratios, noise, change
    (new - old, None without both) and verdict: 'better', 'worse' (beyond the
    noise: a regression), 'within noise', 'n/a' (a ratio missing), 'new' or
    'gone'."""
    om, nm = measures(old), measures(new)
    keys = list(nm) + [k for k in om if k not in nm]
    out = []
    for key in keys:
        o, n = om.get(key), nm.get(key)
        row, m = n if n else o
        e = {"row": key[0], "field": key[1], "title": row["title"], "name": m["name"],
             "old": o[1]["ratio"] if o else None, "new": n[1]["ratio"] if n else None,
             "old_range": ratio_range(o[1]) if o else None, "new_range": ratio_range(n[1]) if n else None,
             "change": None, "noise": None}
        if not o:
            e["verdict"] = "new"
        elif not n:
            e["verdict"] = "gone"
        elif e["old"] is None or e["new"] is None:
            e["verdict"] = "n/a"
        else:
            e["change"] = e["new"] - e["old"]
            e["noise"] = max(spread(o[1]), spread(n[1]))
            worse_by = -e["change"] if higher_is_better(m) else e["change"]
            e["verdict"] = "worse" if worse_by > e["noise"] else "better" if -worse_by > e["noise"] else "within noise"
        out.append(e)
    return out


def goal_results(run, goals):
    """(goal, ratio or None, met or None) for every goal with a compare row
    that the run measured."""
    ms = measures(run)
    out = []
    for g in goals:
        if "row" not in g or (g["row"], g["field"]) not in ms:
            continue
        ratio = ms[(g["row"], g["field"])][1]["ratio"]
        out.append((g, ratio, met(g, ratio)))
    return out


def check(old, new, goals):
    """(failures, notes): one line per regression and per enforced goal the
    new run misses; notes for the goals not enforced that it misses."""
    failures, notes = [], []
    for e in compare(old, new):
        if e["verdict"] == "worse":
            failures.append(f"regression: {e['title']}: {e['name']}: ratio {e['old']:.2f} -> {e['new']:.2f} "
                            f"(worse by {abs(e['change']):.2f}, noise {e['noise']:.2f})")
    ms = measures(new)
    for g, ratio, ok in goal_results(new, goals):
        if ok:
            continue
        title = ms[(g["row"], g["field"])][0]["title"]
        r = "no ratio" if ratio is None else f"ratio {ratio:.2f}"
        line = f"goal not met: {g['what']} ({title}): {r}, goal {' '.join(map(str, bound(g)))}"
        (failures if g["enforce"] and ok is False else notes).append(line + ("" if g["enforce"] else " (not enforced)"))
    return failures, notes


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def fmt_range(rng):
    return "" if rng is None else f" ({rng[0]:.2f}–{rng[1]:.2f})"


def diff_table(old, new, goals):
    """The two runs' ratios side by side, as text lines."""
    goal_by = {}
    for g, ratio, ok in goal_results(new, goals):
        goal_by[(g["row"], g["field"])] = goal_text(g, ratio)
    w = (44, 24, 20, 20, 7, 6, 13)
    head = (f"{'workload':<{w[0]}} {'measure':<{w[1]}} {'old ratio (min–max)':>{w[2]}} "
            f"{'new ratio (min–max)':>{w[3]}} {'change':>{w[4]}} {'noise':>{w[5]}} {'verdict':<{w[6]}} goal")
    lines = [f"old: {describe(old)}", f"new: {describe(new)}", "", head, "-" * len(head)]
    last = None
    for e in compare(old, new):
        title = e["title"] if e["row"] != last else ""
        last = e["row"]
        change = "" if e["change"] is None else f"{e['change']:+.2f}"
        noise = "" if e["noise"] is None else f"{e['noise']:.2f}"
        lines.append(f"{title:<{w[0]}} {e['name']:<{w[1]}} {fmt_ratio(e['old']) + fmt_range(e['old_range']):>{w[2]}} "
                     f"{fmt_ratio(e['new']) + fmt_range(e['new_range']):>{w[3]}} {change:>{w[4]}} {noise:>{w[5]}} "
                     f"{e['verdict']:<{w[6]}} {goal_by.get((e['row'], e['field']), '')}".rstrip())
    lines.append("")
    lines.append("ratio: armitage / CppNix, median over the rounds; (min–max): of the per-round ratios.")
    lines.append("noise: the larger of the two runs' min–max spreads; worse/better: the ratio moved by more than it")
    lines.append("(for /s and GB/s measures higher is better, for the others lower).")
    return lines


def describe(run):
    m = run.get("machine", {})
    return (f"{run.get('date', '?')}, armitage {run.get('armitage', '?')}, {run.get('rounds', '?')} round(s), "
            f"`{run.get('command', '?')}`, other work {m.get('other_cpu_cores', '?')} cores")


# --- the baseline ----------------------------------------------------------------------

FULL_RUN = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")


def newest_baseline(results_dir=os.path.join(HERE, "results")):
    """The newest full run (DATE.json, not -quick or -partial) git tracks in
    results_dir, or None."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=results_dir, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, check=True).stdout.decode().split()
    except (OSError, subprocess.CalledProcessError):
        return None
    runs = sorted(f for f in tracked if FULL_RUN.match(f))
    return os.path.join(results_dir, runs[-1]) if runs else None
