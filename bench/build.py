#!/usr/bin/env python3
"""Build benchmark: building derivations through `armitage daemon` and
CppNix's `nix-daemon`, both driven by the same Nix client binaries, each
daemon on its own throwaway store and in its own cgroup (v1 `cpuacct` and
`memory`, so that the builders and everything else a daemon forks are
counted with it), alternately rep by rep.

Run it through bench/build.sh, which builds armitage and checks what is
needed; bench/README.md says what is measured and how to read it. The
daemons, cgroups and helpers come from bench/daemon.py; bench/compare.py
runs the same workloads (`Bench`'s per-rep functions) in its rounds.
"""

import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goals  # noqa: E402
from daemon import (NIX32, Cgroup, Closure, Daemon, Interrupted, argparser, reps_and_workloads,  # noqa: E402
                    run_output, start_work)

FULL = {"noop": 20, "leaves": 100, "sandbox": 100, "subst": 300}
QUICK = {"noop": 5, "leaves": 20, "sandbox": 8, "subst": 60}
WORKLOADS = ["noop", "graph", "sandbox", "subst"]

# The derivations: `sh -c` scripts that use only the shell's builtins (the
# builders' PATH is /path-not-set). `graph` is `leaves` leaves reduced two
# at a time by joins (a balanced tree, leaves - 1 joins) under one top:
# 2 x leaves derivations. Each join copies its inputs' lines, so the top's
# output has one line per leaf (plus its own): the check that all were built.
NIX_EXPR = r"""
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  copy = p: "while read -r l; do echo \"$l\"; done < ${p}; ";
  leaf = salt: i: mk "leaf${toString i}-${salt}" "echo leaf ${toString i} > $out";
  join = salt: n: a: b: mk "join${toString n}-${salt}" "{ ${copy a}${copy b}} > $out";
  reduce = salt: queue: n:
    if builtins.length queue == 1 then builtins.head queue
    else reduce salt
      (builtins.tail (builtins.tail queue) ++ [ (join salt n (builtins.elemAt queue 0) (builtins.elemAt queue 1)) ])
      (n + 1);
in {
  graph = salt: leaves: mk "top-${salt}" "{ echo top; ${copy (reduce salt (builtins.genList (leaf salt) leaves) 0)}} > $out";
  trivial = salt: mk "trivial-${salt}" "echo ${salt} > $out";
}
"""


# The binary cache's server: what `python3 -m http.server --bind 127.0.0.1
# --directory DIR PORT` runs (HTTP/1.0, a thread per connection), with a
# longer listen backlog. The stock one of 5 overflows as soon as a client
# opens more connections at once than that: the kernel drops the SYNs and
# the client retries a second later, which then dominates the timings of
# whichever daemon fetches in parallel.
HTTP_SERVER = r"""
import functools, http.server, sys

class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

Server(("127.0.0.1", int(sys.argv[2])), functools.partial(Handler, directory=sys.argv[1])).serve_forever()
"""


def nix_conf(sandbox, sandbox_paths, public_key):
    """The daemons' (and the clients') nix.conf. Builds run as root, without
    build users, in both modes: both daemons sandbox without them, and the
    nixbld users stay free for whatever else runs on the machine."""
    conf = [
        "substituters =",
        f"trusted-public-keys = {public_key}",
        "require-sigs = true",
        "build-users-group =",
        "max-jobs = 2",
        "experimental-features = nix-command",
    ]
    if sandbox:
        conf += ["sandbox = true", "sandbox-fallback = false", "sandbox-paths = " + " ".join(sandbox_paths)]
    else:
        conf.append("sandbox = false")
    return "\n".join(conf) + "\n"


def shell_closure():
    """/bin/sh and the libraries `ldd` says it loads: the sandbox's
    `sandbox-paths`, so that `/bin/sh` runs inside it."""
    out = subprocess.run(["ldd", "/bin/sh"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    paths = ["/bin/sh"]
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/") and word not in paths:
                paths.append(word)
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values, q):
    """The q-th quantile (0..1), interpolated between the closest ranks."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class SubstClosure(Closure):
    """`count` paths for the substitution: path i refers to i/2 and i/3 (a
    graph about log2(count) deep), the last one to all the others, so that
    its closure is all of them and much of it can be fetched side by side.
    Names and contents depend only on the seed (the same for both daemons)."""

    def __init__(self, count, tag, seed, size):
        rng = random.Random(seed)
        self.names = [f"{''.join(rng.choice(NIX32) for _ in range(32))}-bench-{tag}-{i}" for i in range(count)]
        self.refs = []
        for i in range(count):
            below = range(i) if i == count - 1 else {i // 2, i // 3} - {i}
            self.refs.append(sorted(self.names[j] for j in below))
        self.bodies = []
        for i, refs in enumerate(self.refs):
            body = (f"{tag} {i}\n" + "".join(r + "\n" for r in refs)).encode()
            self.bodies.append(body + rng.randbytes(max(0, size - len(body))))


class BuildDaemon(Daemon):
    """bench/daemon.py's daemon, with its builds' temporary directories
    (TMPDIR) in its own folder: on the same file system as its store, and
    moved with it by BENCH_DIR."""

    def __init__(self, *args):
        super().__init__(*args)
        self.tmp = os.path.join(self.root, "tmp")
        os.makedirs(self.tmp, exist_ok=True)

    def env(self, remote):
        env = super().env(remote)
        env["TMPDIR"] = self.tmp
        return env


def local(d, cmd, stdin=None):
    """A Nix tool on d's store dir without a daemon (setup), quietly."""
    r = subprocess.run(cmd, env=d.env("local"), input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({r.returncode}):\n{r.stderr.decode(errors='replace')}")


# --- one timed client command ------------------------------------------------------

def timed(d, cmd, env=None):
    """Runs one client command against a settled daemon: (wall, daemon CPU,
    peak memory, the client's CPU; stdout). The daemon's counters cover the
    command and what the daemon still does after it (nix-daemon's
    connection process exits)."""
    env = env or d.client_env()
    d.settle()
    d.cgroup.reset()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    d.settle()
    if r.returncode != 0:
        raise RuntimeError(f"{d.label}: {' '.join(cmd[:3])} ... failed ({r.returncode}):\n"
                           f"{r.stderr.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "cpu": d.cgroup.cpu_seconds(), "peak": d.cgroup.peak_bytes(), "client_cpu": client}, r.stdout.decode()


class Bench:
    def __init__(self, sizes, reps, work, seed):
        self.sizes = sizes
        self.reps = reps
        self.work = work
        self.seed = seed
        self.expr_file = os.path.join(work, "bench.nix")
        with open(self.expr_file, "w") as f:
            f.write(NIX_EXPR)
        self.drvs = {}  # daemon root -> {name: drv path}
        self.server = None
        self.url = None

    # --- derivations ---

    def instantiate(self, d, names_and_exprs):
        """Instantiates through the daemon (untimed), with one nix-instantiate
        for all of them, and remembers each one's .drv path by name."""
        names = [n for n, _ in names_and_exprs]
        expr = f"let b = import {self.expr_file}; in [ " + " ".join(f"({e})" for _, e in names_and_exprs) + " ]"
        out = run_output(["nix-instantiate", "-E", expr], d.client_env()).decode().split()
        if len(out) != len(names):
            raise RuntimeError(f"{d.label}: nix-instantiate gave {len(out)} paths for {len(names)} derivations")
        self.drvs.setdefault(d.root, {}).update(zip(names, out))

    def drv(self, d, name):
        return self.drvs[d.root][name]

    # --- workloads ---

    # Each workload is a function run once per rep (or per batch of builds)
    # that appends to `runs`, keyed by daemon label, and a loop over the
    # reps; bench/compare.py calls the former in its own rounds.

    def noop_check(self, daemons):
        """Builds the no-op derivation (untimed) and checks its output."""
        for d in daemons:
            r = run_output(["nix-store", "--realise", self.drv(d, "noop")], d.client_env()).decode()
            if not os.path.exists(r.strip()):
                raise RuntimeError(f"{d.label}: the no-op derivation's output is missing")

    def noop_rep(self, daemons, rep, runs):
        """`nix-store --realise` of the built .drv, `noop` times each."""
        for k in range(self.sizes["noop"]):
            for d in (daemons if (rep + k) % 2 == 0 else daemons[::-1]):
                m, _ = timed(d, ["nix-store", "--realise", self.drv(d, "noop")])
                runs.setdefault(d.label, []).append(m)

    def noop(self, daemons, results):
        self.noop_check(daemons)
        runs = {d.label: [] for d in daemons}
        for rep in range(self.reps):
            self.noop_rep(daemons, rep, runs)
            progress(f"noop: rep {rep + 1}/{self.reps} done")
        results["noop"] = runs

    def graph_rep(self, daemons, rep, runs, order=None):
        """The rep's fresh graph, realised by each daemon (`order`: who goes
        first; by default they alternate with the rep)."""
        n = 2 * self.sizes["leaves"]
        for d in order or (daemons if rep % 2 == 0 else daemons[::-1]):
            m, out = timed(d, ["nix-store", "--realise", self.drv(d, f"graph{rep}")])
            with open(out.strip()) as f:
                lines = f.read().splitlines()
            if len(lines) != self.sizes["leaves"] + 1:
                raise RuntimeError(f"{d.label}: the graph's top has {len(lines)} lines, not {self.sizes['leaves'] + 1}")
            m["ops"] = n
            m["builds/s"] = n / m["wall"]
            runs.setdefault(d.label, []).append(m)

    def graph(self, daemons, results):
        runs = {d.label: [] for d in daemons}
        for rep in range(self.reps):
            self.graph_rep(daemons, rep, runs)
            progress(f"graph: rep {rep + 1}/{self.reps} done")
        results["graph"] = runs

    def sandbox_builds(self, daemons, indices, runs):
        """Trivial derivation number i (salted: a new one each time) for each
        i in indices, built by every daemon, who goes first alternating."""
        for i in indices:
            for d in (daemons if i % 2 == 0 else daemons[::-1]):
                m, out = timed(d, ["nix-store", "--realise", self.drv(d, f"trivial{i}")])
                with open(out.strip()) as f:
                    if f.read().strip() != f"sb{self.seed}x{i}":
                        raise RuntimeError(f"{d.label}: the trivial build wrote the wrong output")
                runs.setdefault(f"{d.name} sandbox {d.mode}", []).append(m)

    def sandbox(self, daemons, results):
        """The same trivial derivation (salted per iteration) built by the
        sandboxed and the unsandboxed daemon of each kind, interleaved."""
        runs = {f"{d.name} sandbox {d.mode}": [] for d in daemons}
        iters = self.sizes["sandbox"]
        batch = max(1, iters // 5)
        for start in range(0, iters, batch):
            self.sandbox_builds(daemons, range(start, min(iters, start + batch)), runs)
            progress(f"sandbox: {min(iters, start + batch)}/{iters} builds on each daemon done")
        results["sandbox"] = runs

    def subst_warm(self, daemons):
        """A warm-up (not counted): the caches' nix-cache-info, the daemons'
        narinfo caches and the server's first answers."""
        for d in daemons:
            self.substitute(d, "warm", 10)

    def subst_rep(self, daemons, rep, runs, server_cgroup, order=None):
        n = self.sizes["subst"]
        for d in order or (daemons if rep % 2 == 0 else daemons[::-1]):
            server_cgroup.reset()
            m = self.substitute(d, rep, n)
            m["server_cpu"] = server_cgroup.cpu_seconds()
            m["ops"] = n
            m["paths/s"] = n / m["wall"]
            runs.setdefault(d.label, []).append(m)

    def subst(self, daemons, results, server_cgroup):
        runs = {d.label: [] for d in daemons}
        self.subst_warm(daemons)
        for rep in range(self.reps):
            self.subst_rep(daemons, rep, runs, server_cgroup)
            progress(f"subst: rep {rep + 1}/{self.reps} done")
        results["subst"] = runs

    def substitute(self, d, rep, n):
        top = self.closures[rep].paths(d.store_dir)[-1]
        url = f"{self.url}/{d.kind}"
        m, _ = timed(d, ["nix-store", "--realise", top, "--option", "substituters", url])
        got = run_output(["nix-store", "-q", "--requisites", top], d.client_env()).decode().split()
        if len(got) != n:
            raise RuntimeError(f"{d.label}: substituted a closure of {len(got)} paths, not {n}")
        return m

    # --- the binary caches ---

    def make_caches(self, daemons, secret_key):
        """For each daemon kind: a closure per rep (and a small one for the
        warm-up) imported into a source store that has the daemon's store
        dir but lives elsewhere (`local?root=`), copied to a signed,
        zstd-compressed file:// cache `<work>/cache/<kind>`. The closures
        are the same for both kinds: same names, contents, NARs."""
        self.closures = {"warm": SubstClosure(10, "substwarm", self.seed + 3000, 1024)}
        for rep in range(self.reps):
            self.closures[rep] = SubstClosure(self.sizes["subst"], f"subst{rep}", self.seed + 3001 + rep, 1024)
        for d in daemons:
            src = os.path.join(self.work, f"src-{d.kind}")
            os.makedirs(src, exist_ok=True)
            src_url = f"local?root={src}"
            tops = []
            for c in self.closures.values():
                local(d, ["nix-store", "--store", src_url, "--import"], c.export(d.store_dir))
                tops.append(c.paths(d.store_dir)[-1])
            cache = os.path.join(self.work, "cache", d.kind)
            local(d, ["nix", "copy", "--from", src_url, "--to",
                      f"file://{cache}?compression=zstd&secret-key={secret_key}", *tops])
            shutil.rmtree(src, ignore_errors=True)

    def start_server(self, cgroup, pids_file):
        port = free_port()
        self.server = subprocess.Popen(
            [sys.executable, "-c", HTTP_SERVER, os.path.join(self.work, "cache"), str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=cgroup.join, start_new_session=True)
        with open(pids_file, "a") as f:
            f.write(f"{self.server.pid}\n")
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the cache's HTTP server did not start")
                time.sleep(0.05)

    def stop_server(self):
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


def progress(msg):
    print(f"  {msg}", file=sys.stderr, flush=True)


# --- reporting ----------------------------------------------------------------------

# (workload, measure): goal, from bench/goals.toml (the `build` ones)
GOALS = goals.build_goals(goals.load())


def ms(s):
    return f"{s * 1e3:.1f} ms" if abs(s) < 1 else f"{s:.3f} s"


def us(s):
    return f"{s * 1e6:.0f} us"


def mib(b):
    return f"{b / 1048576:.1f} MiB"


def rows_for(key, runs, sizes):
    """(title, measure, armitage value, CppNix value, format) rows."""
    med = lambda rs, f: statistics.median(f(x) for x in rs)
    p = lambda rs, f, q: quantile([f(x) for x in rs], q)
    wall, cpu, peak = (lambda x: x["wall"]), (lambda x: x["cpu"]), (lambda x: x["peak"])
    ccpu = lambda x: x["client_cpu"]
    out = []
    if key == "noop":
        a, c = runs["armitage"], runs["CppNix"]
        out += [("wall p50", p(a, wall, .5), p(c, wall, .5), ms),
                ("wall p99", p(a, wall, .99), p(c, wall, .99), ms),
                ("daemon CPU p50", p(a, cpu, .5), p(c, cpu, .5), us),
                ("daemon CPU mean", statistics.mean(map(cpu, a)), statistics.mean(map(cpu, c)), us),
                ("client CPU p50", p(a, ccpu, .5), p(c, ccpu, .5), us)]
    elif key == "graph":
        a, c = runs["armitage"], runs["CppNix"]
        per = lambda x: x["cpu"] / x["ops"]
        out += [("wall", med(a, wall), med(c, wall), ms),
                ("builds/s", med(a, lambda x: x["ops"] / x["wall"]), med(c, lambda x: x["ops"] / x["wall"]),
                 lambda v: f"{v:.1f}"),
                ("daemon CPU", med(a, cpu), med(c, cpu), ms),
                ("daemon CPU per build", med(a, per), med(c, per), us),
                ("client CPU", med(a, ccpu), med(c, ccpu), ms),
                ("peak memory", med(a, peak), med(c, peak), mib)]
    elif key == "sandbox":
        for mode in ("off", "on"):
            a, c = runs[f"armitage sandbox {mode}"], runs[f"CppNix sandbox {mode}"]
            out += [(f"sandbox {mode}: wall p50", p(a, wall, .5), p(c, wall, .5), ms),
                    (f"sandbox {mode}: wall p99", p(a, wall, .99), p(c, wall, .99), ms),
                    (f"sandbox {mode}: CPU p50", p(a, cpu, .5), p(c, cpu, .5), us)]
        added = lambda who, f, q: p(runs[f"{who} sandbox on"], f, q) - p(runs[f"{who} sandbox off"], f, q)
        out += [("added wall p50", added("armitage", wall, .5), added("CppNix", wall, .5), ms),
                ("added wall p99", added("armitage", wall, .99), added("CppNix", wall, .99), ms),
                ("added CPU p50", added("armitage", cpu, .5), added("CppNix", cpu, .5), us)]
    elif key == "subst":
        a, c = runs["armitage"], runs["CppNix"]
        per = lambda x: x["cpu"] / x["ops"]
        out += [("wall", med(a, wall), med(c, wall), ms),
                ("paths/s", med(a, lambda x: x["paths/s"]), med(c, lambda x: x["paths/s"]), lambda v: f"{v:.0f}"),
                ("daemon CPU", med(a, cpu), med(c, cpu), ms),
                ("daemon CPU per path", med(a, per), med(c, per), us),
                ("client CPU", med(a, ccpu), med(c, ccpu), ms),
                ("peak memory", med(a, peak), med(c, peak), mib),
                ("HTTP server CPU", med(a, lambda x: x["server_cpu"]), med(c, lambda x: x["server_cpu"]), ms)]
    return out


def titles(sizes):
    return {
        "noop": f"no-op nix-store --realise ({sizes['noop']}/rep)",
        "graph": f"{2 * sizes['leaves']}-derivation graph, max-jobs 2",
        "sandbox": f"trivial build x {sizes['sandbox']}",
        "subst": f"substitute {sizes['subst']} paths (http)",
    }


def report(results, sizes, reps):
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    nix = subprocess.run(["nix", "--version"], stdout=subprocess.PIPE).stdout.decode().split()[-1]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\nBuilds: armitage vs CppNix's nix-daemon {nix}, both driven by Nix {nix} clients; "
          f"{cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d', time.gmtime())}; {reps} rep(s); "
          f"load average at the end {load}\n")
    head = f"{'workload':<36} {'measure':<26} {'armitage':>11} {'CppNix':>11} {'ratio':>6}  goal"
    print(head)
    print("-" * (len(head) + 10))
    summary = {}
    for key, runs in results.items():
        for i, (name, va, vc, f) in enumerate(rows_for(key, runs, sizes)):
            # A difference (the sandbox's added cost) can come out at or
            # below zero in noise: no ratio then if CppNix's does.
            ratio = va / vc if vc > 0 else None
            goal = goals.goal_text(GOALS[(key, name)], ratio) if (key, name) in GOALS else ""
            print(f"{titles(sizes)[key] if i == 0 else '':<36} {name:<26} {f(va):>11} {f(vc):>11} "
                  f"{f'{ratio:.2f}' if ratio is not None else '-':>6}  {goal}")
            summary[f"{key}: {name}"] = {"armitage": va, "CppNix": vc, "ratio": ratio}
    print("\nratio: armitage / CppNix. Daemon CPU is each daemon's cgroup: it and every process it forks,")
    print("builders included. p50/p99 are over every single command; the other figures are medians of reps.")
    print("Sandbox 'added': the sandboxed daemon's figure less the unsandboxed one's, per kind of daemon.")
    return summary


# --- setting up and tearing down (shared with bench/compare.py) -------------------

def refuse_dev_scratch(ap, scratch):
    """Both daemons mount a fresh /dev (and /dev/shm) in the sandbox, which
    hides a store kept below it: builds cannot write their outputs."""
    if (os.path.realpath(scratch) + "/").startswith("/dev/"):
        ap.error("the sandbox workload cannot run with the stores under /dev (BENCH_DIR): "
                 "leave it out (--only noop,graph,subst) or use a tmpfs mounted elsewhere")


def signing_key(work):
    """A binary cache signing key: (secret key file, public key)."""
    key_dir = os.path.join(work, "key")
    os.makedirs(key_dir)
    secret_key, public_key = os.path.join(key_dir, "secret"), os.path.join(key_dir, "public")
    subprocess.run(["nix-store", "--generate-binary-cache-key", "armitage-bench-1", secret_key, public_key], check=True)
    with open(public_key) as f:
        return secret_key, f.read().strip()


def make_daemons(work, tag, armitage, sandbox, public, ssh_dir=""):
    """armitage and CppNix with the sandbox off, and with `sandbox` also
    both with it on (four daemons then), configured, not started."""
    sandbox_paths = shell_closure()
    daemons = []
    for mode in ["off"] + (["on"] if sandbox else []):
        for kind, label in (("armitage", "armitage"), ("cppnix", "CppNix")):
            d = BuildDaemon(kind, label if mode == "off" else f"{label} sandbox on",
                            os.path.join(work, f"{kind}-{mode}"), f"{tag}-{kind}-{mode}", armitage, ssh_dir)
            d.name, d.mode = label, mode
            with open(os.path.join(d.conf_dir, "nix.conf"), "w") as f:
                f.write(nix_conf(mode == "on", sandbox_paths, public))
            daemons.append(d)
    return daemons


def serve_caches(bench, off, secret_key, tag, pids_file):
    """The binary caches for the substitution and their HTTP server, in a
    cgroup of its own (returned)."""
    progress(f"making the binary caches under {bench.work} ...")
    bench.make_caches(off, secret_key)
    server_cgroup = Cgroup(f"{tag}-httpd")
    bench.start_server(server_cgroup, pids_file)
    return server_cgroup


def start_daemons(daemons, pids_file):
    for d in daemons:
        d.start()
        with open(pids_file, "a") as f:
            f.write(f"{d.proc.pid}\n")


def instantiate_all(bench, daemons, chosen):
    """All the derivations the chosen workloads build, instantiated through
    each daemon (untimed)."""
    progress("instantiating ...")
    leaves, seed = bench.sizes["leaves"], bench.seed
    for d in daemons:
        wanted = []
        if d.mode == "off":
            if "noop" in chosen:
                wanted.append(("noop", 'b.trivial "noop"'))
            if "graph" in chosen:
                wanted += [(f"graph{r}", f'b.graph "g{seed}x{r}" {leaves}') for r in range(bench.reps)]
        if "sandbox" in chosen:
            wanted += [(f"trivial{i}", f'b.trivial "sb{seed}x{i}"') for i in range(bench.sizes["sandbox"])]
        if wanted:
            bench.instantiate(d, wanted)


def stop_all(bench, daemons, server_cgroup):
    """The HTTP server and the daemons, by PID; their cgroups removed."""
    if bench is not None:
        bench.stop_server()
    for d in daemons:
        d.stop()
    if server_cgroup is not None:
        server_cgroup.remove()


# --- main ---------------------------------------------------------------------------

def main():
    ap = argparser(__doc__, WORKLOADS, "reps of noop/graph/subst (default 5; 1 with --quick)")
    ap.add_argument("--sandbox-builds", type=int, help="trivial builds per daemon for the sandbox's cost")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.sandbox_builds:
        sizes["sandbox"] = args.sandbox_builds
    reps, chosen = reps_and_workloads(ap, args, WORKLOADS)
    if "sandbox" in chosen:
        refuse_dev_scratch(ap, args.scratch)

    tag, work = start_work(args, "build")
    pids_file = os.path.join(work, "pids")
    daemons = []
    server_cgroup = None
    bench = None
    try:
        bench = Bench(sizes, reps, work, random.randrange(1 << 30))
        secret_key, public = signing_key(work)
        daemons = make_daemons(work, tag, args.armitage, "sandbox" in chosen, public)
        off = [d for d in daemons if d.mode == "off"]
        if "subst" in chosen:
            server_cgroup = serve_caches(bench, off, secret_key, tag, pids_file)
        start_daemons(daemons, pids_file)
        instantiate_all(bench, daemons, chosen)

        results = {}
        for key in chosen:
            if key == "noop":
                bench.noop(off, results)
            elif key == "graph":
                bench.graph(off, results)
            elif key == "sandbox":
                bench.sandbox(daemons, results)
            elif key == "subst":
                bench.subst(off, results, server_cgroup)
        summary = report(results, sizes, reps)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d", time.gmtime()), "sizes": sizes, "reps": reps,
                           "summary": summary, "results": results}, f, indent=1)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop_all(bench, daemons, server_cgroup)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Interrupted as e:
        print(f"bench/build.py: {e}", file=sys.stderr)
        sys.exit(130)
