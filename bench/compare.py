#!/usr/bin/env python3
"""The one benchmark: armitage's daemon against CppNix's nix-daemon 2.8,
every workload of bench/daemon.py and bench/build.py plus two scaling
curves and hostile clients, driven by the same Nix 2.8 client binaries,
alternately (A/B, who goes first alternating) over several rounds, each
daemon on its own throwaway store and in its own cgroup (v1 `cpuacct` and
`memory`: the daemon and every process it forks).

Prints a table of medians, min-max over the rounds and armitage/CppNix
ratios (and the same in markdown for the README), writes the results as
JSON and draws them as SVG (bench/chart.py) under bench/results/.

Run it through bench/compare, which builds armitage and checks what is
needed; bench/README.md says what is measured and how to read it.
`--check [BASELINE.json]` then compares the run with a baseline and the
goals of bench/goals.toml (exit 1 on a regression or a goal not met);
`bench/compare.py --diff OLD.json NEW.json` compares two results files
without running anything (bench/goals.py has the rules).
"""

import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build as B  # noqa: E402
import chart  # noqa: E402
import daemon as D  # noqa: E402
import goals as G  # noqa: E402

# Sizes: bench/daemon.py's, bench/build.py's (`noop` and `sandbox` per
# round), the path-info curve's closure sizes and the clients curve's counts.
FULL = {**D.FULL, "noop": 10, "leaves": 100, "sandbox": 20, "subst": 300,
        "curve": [1000, 10000, 50000], "client_curve": [1, 4, 16, 64]}
QUICK = {**D.QUICK, "noop": 5, "leaves": 20, "sandbox": 8, "subst": 60,
         "curve": [500, 2000, 5000], "client_curve": [1, 4, 16, 64]}
ROUNDS = 3

# What --only can pick, in the order they run in every round.
WORKLOADS = ["noop", "graph", "sandbox", "path-info", "add", "import", "dump", "nar", "queries", "subst",
             "path-info-curve", "clients-curve", "attack"]
BUILD_WORKLOADS = {"noop", "graph", "sandbox", "subst"}

SMOKE = "SMOKE TEST (--quick: one round, reduced sizes): not for comparison"


def progress(msg):
    print(f"  {msg}", file=sys.stderr, flush=True)


# --- rows: what the table, the JSON and the chart show -------------------------------

def rows_for(chosen, sizes):
    """(key, title) of every row, in order: a workload, or one point of a
    curve (`path-info@N`, `clients@N`); the curves' points that another row
    already measures (the closure's size, the queries' client count) are
    taken from it."""
    s = sizes
    titles = {
        "noop": f"no-op realise (median of {s['noop']} per round)",
        "graph": f"{2 * s['leaves']}-derivation graph, max-jobs 2",
        "sandbox": f"sandbox set-up ({s['sandbox']} trivial builds per round)",
        "path-info": f"path-info -r, {s['closure']}-path closure",
        "add": f"{s['adds']} x nix-store --add",
        "import": f"nix-store --import, {s['imports']} paths",
        "dump": f"dump-path {s['dump_mib']} MiB (client reads files)",
        "nar": f"dump-path {s['dump_mib']} MiB over ssh-ng (NarFromPath)",
        "queries": f"{s['clients']} clients x {s['queries']} queries",
        "subst": f"substitute {s['subst']} paths (HTTP cache)",
        "attack": f"queries under attack ({s['idle'] + s['half_open'] + s['loris']} hostile conns)",
    }
    rows = []
    for key in chosen:
        if key == "path-info-curve":
            rows += [(f"path-info@{n}", f"path-info -r, {n}-path closure") for n in curve_points(chosen, s)
                     if not (n == s["closure"] and "path-info" in chosen)]
        elif key == "clients-curve":
            rows += [(f"clients@{n}", f"{n} client{'s' if n > 1 else ''} x {s['queries']} queries")
                     for n in s["client_curve"] if not (n == s["clients"] and "queries" in chosen)]
        else:
            rows.append((key, titles[key]))
    return rows


def curve_points(chosen, sizes):
    """The path-info curve's closure sizes (with the path-info workload's)."""
    pts = set(sizes["curve"])
    if "path-info" in chosen:
        pts.add(sizes["closure"])
    return sorted(pts)


# (label, field in a round's figures, unit, chart bar) per row; every row
# has wall, daemon CPU and peak memory, drawn on the chart.
def measures_for(key):
    wall = "latency under attack" if key == "attack" else "wall"
    out = [(wall, "wall", "s", "wall"), ("daemon CPU", "cpu", "s", "cpu"), ("peak memory", "peak", "B", "memory")]
    if key == "sandbox":
        out[0] = ("wall added", "wall", "s", "wall")
        out[1] = ("daemon CPU added", "cpu", "s", "cpu")
        out[2] = ("peak memory, sandboxed", "peak", "B", "memory")
        out += [("build wall, sandbox on", "on_wall", "s", None), ("build wall, sandbox off", "off_wall", "s", None)]
    elif key == "graph":
        out.append(("builds/s", "builds/s", "/s", None))
    elif key in ("queries", "attack") or key.startswith("clients@"):
        if key != "attack":
            out.append(("queries/s", "queries/s", "/s", None))
    elif key in ("dump", "nar"):
        out.append(("GB/s", "GB/s", "GB/s", None))
    elif key == "subst":
        out.append(("paths/s", "paths/s", "/s", None))
    if key == "attack":
        out += [("latency quiet", "latency quiet", "s", None), ("attack / quiet", "attack/quiet", "x", None)]
    return out


# --- formatting ----------------------------------------------------------------------

def sig(x, digits=3):
    """x with `digits` significant digits (integers kept whole)."""
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.2g}"


def scale(unit, v):
    """(divisor, unit text) suited to a value v of a unit."""
    if unit == "s":
        a = abs(v)
        return (1, "s") if a >= 1 else (1e-3, "ms") if a >= 1e-3 else (1e-6, "µs")
    if unit == "B":
        return (1 << 30, "GiB") if abs(v) >= 1 << 30 else (1 << 20, "MiB")
    return 1, {"/s": "/s", "GB/s": "GB/s", "x": "x"}[unit]


def fmt(unit, med, lo=None, hi=None):
    """'29.2 ms (28.1–31.0)', or without the range if none is given."""
    div, text = scale(unit, med)
    sep = "" if text in ("/s", "x") else " "
    main = f"{sig(med / div)}{sep}{text}"
    if lo is None:
        return main
    return f"{main} ({sig(lo / div)}–{sig(hi / div)})"


def cell(ms, label, single):
    """A measure's median for a daemon, with its min–max over the rounds."""
    v = ms[label]
    return fmt(ms["unit"], v["median"]) if single else fmt(ms["unit"], v["median"], v["min"], v["max"])


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


# --- one round's figures per workload ------------------------------------------------

def med(xs):
    return statistics.median(xs)


def reduce_commands(ms):
    """A round of single commands (noop) as one figure: their medians."""
    out = {k: med([m[k] for m in ms]) for k in ("wall", "cpu", "peak", "client_cpu")}
    out["commands"] = len(ms)
    return out


def reduce_sandbox(runs, name):
    """A round of trivial builds of one kind of daemon: what the sandbox
    adds (median with it less median without), and the medians."""
    on, off = runs[f"{name} sandbox on"], runs[f"{name} sandbox off"]
    mo = {k: med([m[k] for m in on]) for k in ("wall", "cpu", "peak")}
    mf = {k: med([m[k] for m in off]) for k in ("wall", "cpu", "peak")}
    return {"wall": mo["wall"] - mf["wall"], "cpu": mo["cpu"] - mf["cpu"], "peak": mo["peak"],
            "on_wall": mo["wall"], "off_wall": mf["wall"], "on_cpu": mo["cpu"], "off_cpu": mf["cpu"],
            "builds": len(on)}


# --- the run -------------------------------------------------------------------------

def machine():
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        ram = next(int(l.split()[1]) for l in f if l.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram / 1048576), "kernel": platform.release()}


def load():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine_busy():
    """CPU seconds the machine has spent busy (user, system, interrupts;
    not idle, I/O wait or steal) since it started."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def own_process_cpu():
    """CPU seconds of this process and the children it has waited for (the
    clients and the setup's Nix tools; not the daemons, still running)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def armitage_version():
    """The commit armitage was built from, '+dirty' with local changes to
    its sources (Rust files, manifests)."""
    def git(*args):
        return subprocess.run(["git", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "*.rs", "*Cargo.toml", "Cargo.lock")
    return commit + ("+dirty" if dirty else "")


def main():
    ap = D.argparser(__doc__, WORKLOADS, f"rounds (default {ROUNDS}; 1 with --quick)")
    ap.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; 1 with --quick); --reps is the same")
    ap.add_argument("--out", default="bench/results", help="where DATE.json and DATE.svg go (default bench/results)")
    ap.add_argument("--check", nargs="?", const="", metavar="BASELINE",
                    help="after the run, fail on a ratio worse than BASELINE's beyond the noise or a goal of "
                         "bench/goals.toml not met (default BASELINE: the newest committed full run)")
    args = ap.parse_args()
    # Loaded before the run: it may write over the baseline's file.
    check = None if args.check is None else load_check(ap, args.check)
    args.reps = args.rounds or args.reps
    rounds = args.reps or (1 if args.quick else ROUNDS)
    _, chosen = D.reps_and_workloads(ap, args, WORKLOADS)
    chosen = [w for w in WORKLOADS if w in chosen]
    if "sandbox" in chosen:
        B.refuse_dev_scratch(ap, args.scratch)
    sizes = dict(QUICK if args.quick else FULL)
    command = "sudo bench/compare" + (" --quick" if args.quick else "") + \
        (f" --rounds {args.reps}" if args.reps else "") + (f" --only {args.only}" if args.only else "")
    date = time.strftime("%Y-%m-%d", time.gmtime())
    started = time.monotonic()
    load_start = load()

    tag, work = D.start_work(args, "compare")
    pids_file = os.path.join(work, "pids")
    daemons, server_cgroup, bench = [], None, None
    try:
        seed = random.randrange(1 << 30)
        bin_dir = os.path.join(work, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "ssh"), "w") as f:
            f.write(D.FAKE_SSH)
        os.chmod(os.path.join(bin_dir, "ssh"), 0o755)

        build_sizes = {k: sizes[k] for k in ("noop", "leaves", "subst")}
        build_sizes["sandbox"] = sizes["sandbox"] * rounds  # a new derivation for every build
        bench = B.Bench(build_sizes, rounds, work, seed)
        secret_key, public = B.signing_key(work)
        daemons = B.make_daemons(work, tag, args.armitage, "sandbox" in chosen, public, bin_dir)
        off = [d for d in daemons if d.mode == "off"]
        by_label = {d.label: d for d in off}
        pair = [by_label["armitage"], by_label["CppNix"]]

        # The fixtures, made once per run: the closure (as large as the
        # path-info curve needs: path i's closure is paths 0..i, so it
        # serves every size) written and registered straight into each
        # store, the big path added to each; then the binary caches.
        fixture = max(curve_points(chosen, sizes)) if "path-info-curve" in chosen else sizes["closure"]
        wl = D.Workloads(sizes, work, seed, fixture=fixture)
        progress(f"setting up the stores under {work}: a {fixture}-path closure, a {sizes['dump_mib']} MiB path ...")
        big_src = os.path.join(work, "big")
        os.makedirs(big_src)
        for i in range(4):
            with open(os.path.join(big_src, f"blob{i}"), "wb") as f:
                f.write(os.urandom(sizes["dump_mib"] * 1024 * 1024 // 4))
        for d in off:
            wl.setup(d, big_src, register=True)
        shutil.rmtree(big_src)
        if "subst" in chosen:
            server_cgroup = B.serve_caches(bench, off, secret_key, tag, pids_file)
        B.start_daemons(daemons, pids_file)
        B.instantiate_all(bench, daemons, [w for w in chosen if w in BUILD_WORKLOADS])
        progress("checking that both daemons give the same answers ...")
        wl.check(off)  # also warms both up
        if "noop" in chosen:
            bench.noop_check(off)
        if "subst" in chosen:
            bench.subst_warm(off)

        rows = rows_for(chosen, sizes)
        results = {key: {"armitage": [], "CppNix": []} for key, _ in rows}

        def daemon_row(key, fn, rnd, order):
            runs = {}
            for d in order:
                runs[d.label] = [D.measure(d, fn, rnd)]
            return runs

        # What the benchmark itself spends (this process, the clients, the
        # daemons, the HTTP server), against what the whole machine spends:
        # the rest is other work, reported so that a busy run shows as one.
        own_cpu, t_rounds, busy_rounds, own_rounds = 0.0, time.monotonic(), machine_busy(), own_process_cpu()
        for rnd in range(rounds):
            t_round = time.monotonic()
            for i, (key, _) in enumerate(rows):
                first = (rnd + i) % 2  # who goes first alternates, round by round
                order = pair if first == 0 else pair[::-1]
                runs = {}
                if key == "noop":
                    bench.noop_rep(order, rnd, runs)
                    for label, ms in runs.items():
                        results[key][label].append(reduce_commands(ms))
                elif key == "sandbox":
                    per = sizes["sandbox"]
                    bench.sandbox_builds(daemons, range(rnd * per, (rnd + 1) * per), runs)
                    for name in ("armitage", "CppNix"):
                        results[key][name].append(reduce_sandbox(runs, name))
                else:
                    if key == "graph":
                        bench.graph_rep(pair, rnd, runs, order=order)
                    elif key == "subst":
                        bench.subst_rep(pair, rnd, runs, server_cgroup, order=order)
                    elif key.startswith("path-info"):
                        n = int(key.split("@")[1]) if "@" in key else None
                        runs = daemon_row(key, lambda d, r, n=n: wl.path_info(d, r, n), rnd, order)
                    elif key == "queries" or key.startswith("clients@"):
                        n = int(key.split("@")[1]) if "@" in key else None
                        runs = daemon_row(key, lambda d, r, n=n: wl.queries(d, r, clients=n), rnd, order)
                    else:
                        fn = {"add": wl.adds, "import": wl.imports, "dump": wl.dump, "nar": wl.nar,
                              "attack": wl.attack}[key]
                        runs = daemon_row(key, fn, rnd, order)
                    for label, ms in runs.items():
                        results[key][label] += ms
                own_cpu += sum(m["cpu"] + m.get("server_cpu", 0) for ms in runs.values() for m in ms)
            progress(f"round {rnd + 1}/{rounds} done ({time.monotonic() - t_round:.0f} s)")
        rounds_s = time.monotonic() - t_rounds
        own_cpu += own_process_cpu() - own_rounds
        busy_rounds = machine_busy() - busy_rounds
        other_cores = max(0.0, (busy_rounds - own_cpu) / rounds_s)

        data = summarise(rows, results, sizes, chosen)
        data.update({
            "title": "armitage vs CppNix's nix-daemon 2.8",
            "date": date,
            "command": command,
            "smoke_test": bool(args.quick),
            "note": SMOKE if args.quick else "",
            "machine": {**machine(), "load_start": load_start, "load_end": load(),
                        "other_cpu_cores": round(other_cores, 2), "rounds_s": round(rounds_s, 1),
                        "machine_cpu_s": round(busy_rounds, 1), "benchmark_cpu_s": round(own_cpu, 1)},
            "nix": subprocess.run(["nix", "--version"], stdout=subprocess.PIPE).stdout.decode().split()[-1],
            "armitage": armitage_version(),
            "rounds": rounds,
            "sizes": sizes,
            "duration_s": round(time.monotonic() - started),
        })
        data["raw"] = results  # every round's figures, extras included
    finally:
        for sig_ in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig_, signal.SIG_IGN)
        B.stop_all(bench, daemons, server_cgroup)
        shutil.rmtree(work, ignore_errors=True)

    os.makedirs(args.out, exist_ok=True)
    suffix = "-quick" if args.quick else "-partial" if args.only else ""
    base = os.path.join(args.out, date + suffix)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with open(base + ".svg", "w") as f:
        f.write(chart.svg(data))
    if args.json:
        shutil.copyfile(base + ".json", args.json)
    report(data, base)
    if check is not None:
        sys.exit(run_check(*check, data))


def load_check(ap, baseline):
    """(baseline path, its results, the goals) for --check, or an error."""
    path = baseline or G.newest_baseline()
    if not path:
        ap.error("--check: no committed full run in bench/results to compare with; name a BASELINE.json")
    try:
        with open(path) as f:
            old = json.load(f)
        return path, old, G.load()
    except (OSError, ValueError, G.GoalsError) as e:
        ap.error(f"--check: {e}")


def run_check(path, old, goals, new):
    """Prints the comparison with the baseline; the exit status."""
    print(f"\n----- check against {path} -----\n")
    why = G.incompatible(old, new)
    if why:
        print(f"bench/compare: cannot compare with {path}: {why}", file=sys.stderr)
        return 2
    failures, notes = G.check(old, new, goals)
    for line in notes + failures:
        print(line)
    if failures:
        print(f"bench/compare: {len(failures)} regression(s) or goal(s) not met against {path}", file=sys.stderr)
        return 1
    print(f"no regression against {path}, every enforced goal met")
    return 0


def diff_main(argv):
    """`compare.py --diff OLD.json NEW.json`: both runs' ratios side by side,
    then what --check would say; exit 1 where --check would fail."""
    if len(argv) != 2:
        print("usage: bench/compare.py --diff OLD.json NEW.json", file=sys.stderr)
        return 2
    try:
        runs = []
        for path in argv:
            with open(path) as f:
                runs.append(json.load(f))
        goals = G.load()
    except (OSError, ValueError, G.GoalsError) as e:
        print(f"bench/compare.py: {e}", file=sys.stderr)
        return 2
    old, new = runs
    print("\n".join(G.diff_table(old, new, goals)))
    why = G.incompatible(old, new)
    if why:
        print(f"\nnot comparable: {why}")
        return 2
    failures, notes = G.check(old, new, goals)
    if notes or failures:
        print()
    for line in notes + failures:
        print(line)
    return 1 if failures else 0


def summarise(rows, results, sizes, chosen):
    """Medians, min-max and ratios per row and measure; the curves; each
    daemon's peak memory over the run."""
    out_rows = []
    for key, title in rows:
        measures = []
        for name, field, unit, bar in measures_for(key):
            m = {"name": name, "field": field, "unit": unit, "chart": bar}
            for label in ("armitage", "CppNix"):
                vals = [r[field] for r in results[key][label] if field in r]
                m[label] = {"median": med(vals), "min": min(vals), "max": max(vals), "values": vals}
            a, c = m["armitage"]["median"], m["CppNix"]["median"]
            m["ratio"] = a / c if a > 0 and c > 0 else None
            measures.append(m)
        out_rows.append({"key": key, "title": title, "measures": measures})
    by_key = {r["key"]: r for r in out_rows}

    def point(key, field):
        m = next(m for m in by_key[key]["measures"] if m["field"] == field)
        return {label: {k: m[label][k] for k in ("median", "min", "max")} for label in ("armitage", "CppNix")}

    curves = {}
    if "path-info-curve" in chosen:
        xs = curve_points(chosen, sizes)
        pts = [point("path-info" if n == sizes["closure"] and "path-info" in chosen else f"path-info@{n}", "wall")
               for n in xs]
        curves["path-info"] = {"title": "nix path-info -r: time by closure size", "x_label": "paths in the closure",
                               "y_label": "wall time", "unit": "s", "x": xs, "points": pts, "log_y": True}
    if "clients-curve" in chosen:
        xs = sizes["client_curve"]
        pts = [point("queries" if n == sizes["clients"] and "queries" in chosen else f"clients@{n}", "queries/s")
               for n in xs]
        curves["clients"] = {"title": f"queries/s by clients at once ({sizes['queries']} queries each)",
                             "x_label": "clients at once", "y_label": "queries/s", "unit": "/s", "x": xs,
                             "points": pts, "log_y": False}
    peak = {}
    for label in ("armitage", "CppNix"):
        best = max(((r["peak"], key) for key in results for r in results[key][label] if "peak" in r), default=(0, ""))
        peak[label] = {"bytes": best[0], "workload": dict(rows).get(best[1], best[1])}
    return {"rows": out_rows, "curves": curves, "peak_memory": peak}


def report(data, base):
    smoke = data["smoke_test"]
    m = data["machine"]
    single = data["rounds"] == 1
    head = (f"armitage vs CppNix's nix-daemon {data['nix']}, both driven by Nix {data['nix']} clients; "
            f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {data['date']}; armitage {data['armitage']}; "
            f"{data['rounds']} round{'s' if data['rounds'] > 1 else ''}, A/B alternating")
    print()
    if smoke:
        print(f"*** {SMOKE} ***")
    print(head)
    print(f"other work on the machine used about {m['other_cpu_cores']:.2f} of its {m['cores']} cores during the "
          f"rounds{' (busy: figures are noisy)' if busy(data) else ''}; load average {m['load_start'][0]:.2f} at the "
          f"start, {m['load_end'][0]:.2f} at the end; the run took {data['duration_s'] // 60} min "
          f"{data['duration_s'] % 60} s\n")
    rng = "" if single else " (min–max)"
    w = (44, 24, 28, 28, 6)
    line = (f"{'workload':<{w[0]}} {'measure':<{w[1]}} {'armitage' + rng:>{w[2]}} {'CppNix' + rng:>{w[3]}} "
            f"{'ratio':>{w[4]}}")
    print(line)
    print("-" * len(line))
    for row in data["rows"]:
        for i, ms in enumerate(row["measures"]):
            cells = [cell(ms, l, single) for l in ("armitage", "CppNix")]
            print(f"{row['title'] if i == 0 else '':<{w[0]}} {ms['name']:<{w[1]}} {cells[0]:>{w[2]}} "
                  f"{cells[1]:>{w[3]}} {fmt_ratio(ms['ratio']):>{w[4]}}")
    for label, p in data["peak_memory"].items():
        print(f"{'peak memory over the run' if label == 'armitage' else '':<{w[0]}} {label:<{w[1]}} "
              f"{p['bytes'] / 1048576:>{w[2] - 4}.1f} MiB   ({p['workload']})")
    for c in data["curves"].values():
        print(f"\n{c['title']}:")
        print(f"  {c['x_label']:<22}" + "".join(f"{x:>12}" for x in c["x"]))
        for label in ("armitage", "CppNix"):
            vals = [p[label]["median"] for p in c["points"]]
            print(f"  {label:<22}" + "".join(f"{fmt(c['unit'], v):>12}" for v in vals))
        ratios = [p["armitage"]["median"] / p["CppNix"]["median"] for p in c["points"]]
        print(f"  {'armitage/CppNix':<22}" + "".join(f"{r:>12.2f}" for r in ratios))
    print("\nratio: armitage / CppNix (below 1: armitage lower; for /s and GB/s rows, above 1: armitage faster).")
    print("Medians over the rounds" + ("" if single else ", min–max in brackets") + ".")
    print("Daemon CPU and peak memory are each daemon's cgroup: it and every process it forks (CppNix's")
    print("per-connection processes, builders).")
    print("Peak memory: the cgroup's memory.max_usage_in_bytes during the workload, less the page cache and kernel")
    print("memory already charged to it: the resident memory of all its processes (shared pages once), and the")
    print("kernel memory and page cache added during the workload. armitage is one process: its figure includes")
    print("what it kept from earlier workloads of the run.")
    if smoke:
        print(f"\n*** {SMOKE} ***")
    print(f"\nwrote {base}.json and {base}.svg")
    print("\n----- for the README (markdown) -----\n")
    print(markdown(data, os.path.basename(base) + ".svg"))


def busy(data):
    """Whether other work took a noticeable share of the machine (a fifth of a core)."""
    return data["machine"]["other_cpu_cores"] > 0.2


def markdown(data, svg_name):
    m = data["machine"]
    single = data["rounds"] == 1
    out = []
    if data["smoke_test"]:
        out.append(f"**{SMOKE}.**\n")
    out.append(f"Latest run: {data['date']}, {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
               f"Nix {data['nix']}, armitage {data['armitage']} (release build), `{data['command']}`: "
               f"{data['rounds']} round{'s' if data['rounds'] > 1 else ''}, {data['duration_s'] // 60} min "
               f"{data['duration_s'] % 60} s. Other work on the machine used about {m['other_cpu_cores']:.2f} "
               f"of its {m['cores']} cores during the rounds"
               + (" (a busy machine: figures are noisy)." if busy(data) else "."))
    out.append("")
    rng = "" if single else " (min–max)"
    out.append(f"| workload | measure | armitage{rng} | CppNix{rng} | armitage/CppNix |")
    out.append("|---|---|---:|---:|---:|")
    for row in data["rows"]:
        for i, ms in enumerate(row["measures"]):
            cells = [cell(ms, l, single) for l in ("armitage", "CppNix")]
            out.append(f"| {row['title'] if i == 0 else ''} | {ms['name']} | {cells[0]} | {cells[1]} | "
                       f"{fmt_ratio(ms['ratio'])} |")
    p = data["peak_memory"]
    out.append("")
    out.append("Peak memory over the run (each daemon's cgroup, every process it forked counted): "
               + "; ".join(f"{label} {v['bytes'] / 1048576:.1f} MiB ({v['workload']})" for label, v in p.items()) + ".")
    for c in data["curves"].values():
        out.append("")
        out.append(f"| {c['title']} | " + " | ".join(str(x) for x in c["x"]) + " |")
        out.append("|---|" + "---:|" * len(c["x"]))
        for label in ("armitage", "CppNix"):
            out.append(f"| {label} | " + " | ".join(fmt(c["unit"], p[label]["median"])
                                                  for p in c["points"]) + " |")
        out.append("| armitage/CppNix | " + " | ".join(f"{p['armitage']['median'] / p['CppNix']['median']:.2f}"
                                                      for p in c["points"]) + " |")
    out.append("")
    out.append(f"![chart](bench/results/{svg_name})")
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--diff"]:
        sys.exit(diff_main(sys.argv[2:]))
    try:
        main()
    except D.Interrupted as e:
        print(f"bench/compare.py: {e}", file=sys.stderr)
        sys.exit(130)
