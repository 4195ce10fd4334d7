#!/usr/bin/env python3
"""Daemon benchmark: the same workloads against `armitage daemon` and
CppNix's `nix-daemon`, both driven by the same Nix client binaries,
alternately rep by rep, each daemon on its own throwaway store and in its
own cgroup (v1 `cpuacct` and `memory`), so that what a daemon costs is
counted with every process it forks.

Run it through bench/daemon.sh, which builds armitage and checks what is
needed; bench/README.md says what is measured and how to read it.
bench/compare.py runs the same workloads (`Workloads`) in its rounds.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
EXPORT_MAGIC = 0x4558494E
CGROUP_ROOT = "/sys/fs/cgroup"

FULL = {"closure": 2000, "clients": 16, "queries": 200, "dump_mib": 200, "imports": 500, "adds": 500,
        "idle": 200, "half_open": 100, "loris": 8}
QUICK = {"closure": 500, "clients": 16, "queries": 50, "dump_mib": 32, "imports": 100, "adds": 50,
         "idle": 50, "half_open": 25, "loris": 3}


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"interrupted by signal {signum}")


# --- store paths, NARs and export streams ------------------------------------------

def wire_bytes(b):
    return len(b).to_bytes(8, "little") + b + b"\0" * ((8 - len(b) % 8) % 8)


def u64(n):
    return n.to_bytes(8, "little")


def nar_of_file(contents):
    parts = [b"nix-archive-1", b"(", b"type", b"regular", b"contents", contents, b")"]
    return b"".join(wire_bytes(p) for p in parts)


class Closure:
    """`count` input-addressed paths, each referring to paths i-1, i/2 and
    i/3, so that the last one's closure is all of them. Base names and
    contents depend only on the seed, so both stores get the same ones."""

    def __init__(self, count, tag, seed, size):
        rng = random.Random(seed)
        self.names = [f"{''.join(rng.choice(NIX32) for _ in range(32))}-bench-{tag}-{i}" for i in range(count)]
        self.refs = [sorted({self.names[j] for j in (i - 1, i // 2, i // 3) if 0 <= j < i}) for i in range(count)]
        self.bodies = []
        for i, refs in enumerate(self.refs):
            body = (f"{tag} {i}\n" + "".join(r + "\n" for r in refs)).encode()
            self.bodies.append(body + rng.randbytes(max(0, size - len(body))))

    def paths(self, store_dir):
        return [f"{store_dir}/{n}" for n in self.names]

    def export(self, store_dir):
        """What `nix-store --export` of all of them, in order, would print."""
        out = bytearray()
        for name, refs, body in zip(self.names, self.refs, self.bodies):
            out += u64(1) + nar_of_file(body) + u64(EXPORT_MAGIC) + wire_bytes(f"{store_dir}/{name}".encode())
            out += u64(len(refs)) + b"".join(wire_bytes(f"{store_dir}/{r}".encode()) for r in refs)
            out += wire_bytes(b"") + u64(0)
        out += u64(0)
        return bytes(out)

    def register(self, d):
        """Puts the paths straight into d's store directory and registers
        them with `nix-store --register-validity --hash-given` (CppNix, no
        daemon, one transaction): for tens of thousands of paths much faster
        than importing them, and the store ends up the same."""
        os.makedirs(d.store_dir, exist_ok=True)
        lines = []
        for name, refs, body in zip(self.names, self.refs, self.bodies):
            path = f"{d.store_dir}/{name}"
            with open(path, "wb") as f:
                f.write(body)
            nar = nar_of_file(body)
            lines += [path, "sha256:" + hashlib.sha256(nar).hexdigest(), str(len(nar)), "", str(len(refs))]
            lines += [f"{d.store_dir}/{r}" for r in refs]
        d.local("nix-store", "--register-validity", "--hash-given", input=("\n".join(lines) + "\n").encode())


# --- cgroups ---------------------------------------------------------------------

def own_cgroup(controller):
    """This process's cgroup in a v1 hierarchy (the groups are made under it)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


class Cgroup:
    """One child group in the cpuacct and memory hierarchies."""

    def __init__(self, name):
        self.left_at_reset = 0
        self.dirs = {}
        for c in ("cpuacct", "memory"):
            d = os.path.join(CGROUP_ROOT, c) + own_cgroup(c).rstrip("/") + "/" + name
            os.makedirs(d, exist_ok=True)
            self.dirs[c] = d

    def read(self, controller, name):
        with open(os.path.join(self.dirs[controller], name)) as f:
            return f.read()

    def write(self, controller, name, value):
        with open(os.path.join(self.dirs[controller], name), "w") as f:
            f.write(value)

    def join(self):
        """Moves the calling process in (run in the child, before exec)."""
        pid = str(os.getpid())
        for c in self.dirs:
            self.write(c, "cgroup.procs", pid)

    def pids(self):
        return {int(p) for p in self.read("memory", "cgroup.procs").split()}

    def stat(self, field):
        for line in self.read("memory", "memory.stat").splitlines():
            name, value = line.split()
            if name == field:
                return int(value)
        return 0

    def kmem(self):
        try:
            return int(self.read("memory", "memory.kmem.usage_in_bytes"))
        except OSError:
            return 0

    def reset(self):
        """Zeroes the CPU counter and restarts the memory peak from now."""
        self.write("cpuacct", "cpuacct.usage", "0")
        self.write("memory", "memory.max_usage_in_bytes", "0")
        # Page cache charged to the group by earlier reps (files the daemon
        # wrote) stays charged, and so does kernel memory (those files'
        # inodes and dentries): both are subtracted from the peak rather
        # than dropped, which would also evict the daemon's code and database.
        self.left_at_reset = self.stat("total_cache") + self.kmem()

    def cpu_seconds(self):
        return int(self.read("cpuacct", "cpuacct.usage")) / 1e9

    def peak_bytes(self):
        """The peak since `reset`: resident memory of every process in the
        group (shared pages once), new kernel memory, new page cache."""
        return int(self.read("memory", "memory.max_usage_in_bytes")) - self.left_at_reset

    def remove(self):
        for d in self.dirs.values():
            try:
                os.rmdir(d)
            except OSError:
                pass


# --- daemons ---------------------------------------------------------------------

NIX_CONF = "substituters =\nsandbox = false\nexperimental-features = nix-command\nrequire-sigs = false\n"

# Stands in for ssh in `ssh-ng://` store URLs: runs the remote command here.
# The Nix client runs `ssh HOST OPTIONS -- nix-daemon --stdio`, and Nix 2.8's
# `nix-daemon --stdio` forwards to the daemon at NIX_DAEMON_SOCKET_PATH.
FAKE_SSH = """#!/bin/sh
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
[ $# -gt 0 ] && shift
exec sh -c "$*"
"""


class Daemon:
    def __init__(self, kind, label, root, cgroup_name, armitage_bin, fake_ssh_dir):
        self.kind = kind
        self.label = label
        self.root = root
        self.store_dir = os.path.join(root, "store")
        self.state_dir = os.path.join(root, "var/nix")
        self.log_dir = os.path.join(root, "var/log/nix")
        self.conf_dir = os.path.join(root, "etc")
        self.home = os.path.join(root, "home")
        self.socket = os.path.join(root, "daemon.sock")
        self.armitage_bin = armitage_bin
        self.fake_ssh_dir = fake_ssh_dir
        self.proc = None
        for d in (self.state_dir, self.log_dir, self.conf_dir, self.home):
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(self.conf_dir, "nix.conf"), "w") as f:
            f.write(NIX_CONF)
        self.cgroup = Cgroup(cgroup_name)

    def env(self, remote):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NIX_STORE_DIR": self.store_dir,
            "NIX_STATE_DIR": self.state_dir,
            "NIX_LOG_DIR": self.log_dir,
            "NIX_CONF_DIR": self.conf_dir,
            "HOME": self.home,
            "XDG_CACHE_HOME": os.path.join(self.home, ".cache"),
            "NIX_PATH": "",
            "TZ": "UTC",
            "NIX_REMOTE": remote,
        }
        if remote == "daemon":
            env["NIX_DAEMON_SOCKET_PATH"] = self.socket
        return env

    def local(self, *args, **kw):
        """A Nix tool on this store directly (no daemon), for setup."""
        return subprocess.run(list(args), env=self.env("local"), check=True, **kw)

    def client_env(self, ssh=False):
        env = self.env("daemon")
        if ssh:
            env["PATH"] = self.fake_ssh_dir + ":" + env["PATH"]
        return env

    def start(self):
        env = self.env("local")  # for nix-daemon: or it connects to itself
        if self.kind == "armitage":
            cmd = [self.armitage_bin, "--store-dir", self.store_dir, "--state-dir", self.state_dir,
                   "--log-dir", self.log_dir, "daemon", "--socket", self.socket]
        else:
            cmd = ["nix-daemon"]
            env["NIX_DAEMON_SOCKET_PATH"] = self.socket
        with open(os.path.join(self.root, "daemon.log"), "wb") as log:
            # The wrapper: the child joins the groups, then execs the daemon,
            # so it and all it forks are counted from its first instruction.
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=self.cgroup.join, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                with open(os.path.join(self.root, "daemon.log")) as f:
                    raise RuntimeError(f"{self.label} exited ({self.proc.returncode}) before listening:\n{f.read()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} did not start listening on {self.socket}")
                time.sleep(0.02)
        self.settle()

    def settle(self, timeout=10.0):
        """Waits until the daemon is idle: nix-daemon's per-connection
        processes have exited (armitage has none), then a little more."""
        deadline = time.monotonic() + timeout
        while self.cgroup.pids() - {self.proc.pid} and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)

    def stop(self):
        """Stops the daemon by its PID, then kills whatever it forked that is
        still in its group, by their PIDs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                # nix-daemon 2.8 notices SIGTERM only at its next connection.
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            for pid in self.cgroup.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while self.cgroup.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
        except OSError:
            pass
        self.cgroup.remove()

    def sockets(self):
        """How many sockets the daemon's processes hold open (each distinct
        socket once): the listening one, and one per accepted connection."""
        inodes = set()
        for pid in self.cgroup.pids():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:"):
                    inodes.add(target)
        return len(inodes)


# --- hostile clients ---------------------------------------------------------------

WORKER_MAGIC_1 = 0x6E697863


class Hostile:
    """Clients that tie a daemon up without asking anything of it: `idle`
    connections that never send a byte, `half_open` ones that send half of
    the handshake's first word and stop, and `loris` slow-loris clients that
    send a well-formed handshake and request one byte a second (and connect
    again should the daemon hang up). They are sockets of this process:
    nothing of theirs is counted in the daemon's cgroup."""

    # The handshake (magic, protocol 1.34, no CPU affinity, no reserved
    # space) and an IsValidPath request.
    LORIS_BYTES = (u64(WORKER_MAGIC_1) + u64(0x122) + u64(0) + u64(0) + u64(1)
                   + wire_bytes(b"/nix/store/00000000000000000000000000000000-slow"))

    def __init__(self, socket_path, idle, half_open, loris):
        self.path = socket_path
        self.counts = (idle, half_open, loris)
        self.count = idle + half_open + loris
        self.socks = []
        self.loris = []  # [socket, bytes sent]
        self.reconnects = 0
        self.stopping = threading.Event()
        self.thread = None

    def connect(self):
        """A connection; while the daemon's listen backlog is full (CppNix
        2.8 listens with a backlog of 5), tries again for up to 30 s."""
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(self.path)
                return s
            except (BlockingIOError, InterruptedError):
                s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.path}: the daemon accepts no more connections")
                time.sleep(0.001)

    def start(self):
        idle, half_open, loris = self.counts
        for i in range(idle + half_open):
            s = self.connect()
            if i >= idle:
                s.sendall(self.LORIS_BYTES[:4])
            self.socks.append(s)
        self.loris = [[self.connect(), 0] for _ in range(loris)]
        self.thread = threading.Thread(target=self.trickle, daemon=True)
        self.thread.start()

    def trickle(self):
        while not self.stopping.wait(1.0):
            for entry in self.loris:
                s, sent = entry
                try:
                    s.send(self.LORIS_BYTES[sent % len(self.LORIS_BYTES):][:1])
                    entry[1] = sent + 1
                except OSError:
                    s.close()
                    self.reconnects += 1
                    try:
                        entry[0], entry[1] = self.connect(), 0
                    except OSError:
                        pass

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
        for s in self.socks + [entry[0] for entry in self.loris]:
            s.close()
        self.socks, self.loris = [], []


# --- workloads -----------------------------------------------------------------
#
# Each prepares its inputs before the clock starts and returns (wall seconds,
# operations, extra figures). Only the clients' work is timed.

def run_quiet(cmd, env, **kw):
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({r.returncode}):\n{r.stderr.decode(errors='replace')}")


def run_output(cmd, env):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({r.returncode}):\n{r.stderr.decode(errors='replace')}")
    return r.stdout


class Workloads:
    """The daemon workloads. `fixture` (default: the closure size) is how
    many paths the store's closure has: path i's closure is paths 0..i, so
    one fixture serves path-info over any closure size up to it."""

    def __init__(self, sizes, work_dir, seed, fixture=None):
        self.sizes = sizes
        self.work_dir = work_dir
        self.seed = seed
        self.closure = Closure(max(sizes["closure"], fixture or 0), "closure", seed, 256)
        self.big = {}  # daemon kind -> (path, NAR size)

    def setup(self, d, big_src, register=False):
        """Fills a store before its daemon starts, with CppNix and no daemon
        (so that neither daemon is charged for it): the closure that
        path-info and the queries read (imported from an export stream, or
        with `register` written and registered directly, which is faster),
        and the big path for the dumps."""
        if register:
            self.closure.register(d)
        else:
            d.local("nix-store", "--import", input=self.closure.export(d.store_dir), stdout=subprocess.DEVNULL)
        out = d.local("nix-store", "--add", big_src, stdout=subprocess.PIPE).stdout.decode().strip()
        size = int(d.local("nix-store", "-q", "--size", out, stdout=subprocess.PIPE).stdout.decode().strip())
        self.big[d.kind] = (out, size)

    def top(self, d, n=None):
        """The path whose closure is the first n paths (default: `closure`)."""
        return self.closure.paths(d.store_dir)[(n or self.sizes["closure"]) - 1]

    def query_batches(self, d, clients=None, per=None):
        """`clients` batches of `per` paths, spread over the closure."""
        paths = self.closure.paths(d.store_dir)[:self.sizes["closure"]]
        n, per = clients or self.sizes["clients"], per or self.sizes["queries"]
        step = max(1, (len(paths) - per) // max(1, n - 1))
        return [paths[min(i * step, len(paths) - per):][:per] for i in range(n)]

    def path_info(self, d, rep, n=None):
        """`nix path-info -r` of a closure of n paths (default: `closure`):
        n x QueryPathInfo on one connection. Checks the count it lists."""
        n = n or self.sizes["closure"]
        t = time.perf_counter()
        out = run_output(["nix", "path-info", "-r", self.top(d, n)], d.client_env())
        wall = time.perf_counter() - t
        listed = len(out.splitlines())
        if listed != n:
            raise RuntimeError(f"{d.label}: path-info -r listed {listed} paths, not {n}")
        return wall, n, {}

    def queries(self, d, rep, clients=None, per=None):
        """`clients` processes at once, each `nix-store -q --references` of
        `per` paths."""
        env = d.client_env()
        batches = self.query_batches(d, clients, per)
        t = time.perf_counter()
        procs = [subprocess.Popen(["nix-store", "-q", "--references", *b], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for b in batches]
        errors = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - t
        for p, e in zip(procs, errors):
            if p.returncode != 0:
                raise RuntimeError(f"nix-store -q --references failed:\n{e.decode(errors='replace')}")
        total = sum(len(b) for b in batches)
        return wall, total, {"queries/s": total / wall}

    def client_latencies(self, d):
        """The queries workload, timing each client from its start to its
        exit: the latencies, in seconds."""
        env = d.client_env()
        batches = self.query_batches(d)
        starts, ends, errors = [0.0] * len(batches), [0.0] * len(batches), [None] * len(batches)

        def run(i, p):
            _, err = p.communicate()
            ends[i] = time.perf_counter()
            if p.returncode != 0:
                errors[i] = err.decode(errors="replace")

        threads = []
        for i, b in enumerate(batches):
            starts[i] = time.perf_counter()
            p = subprocess.Popen(["nix-store", "-q", "--references", *b], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            threads.append(threading.Thread(target=run, args=(i, p)))
            threads[-1].start()
        for th in threads:
            th.join()
        failed = [e for e in errors if e is not None]
        if failed:
            raise RuntimeError(f"{d.label}: nix-store -q --references failed:\n{failed[0]}")
        return [e - s for s, e in zip(starts, ends)]

    def attack(self, d, rep):
        """The queries workload's clients, each one's latency, first on a
        quiet daemon, then with hostile clients connected (`Hostile`). The
        daemon's CPU and peak memory are those of the attack: accepting the
        hostile connections (CppNix: a process each) and the second run."""
        quiet = self.client_latencies(d)
        hostile = Hostile(d.socket, self.sizes["idle"], self.sizes["half_open"], self.sizes["loris"])
        try:
            # The quiet clients' connections must be gone from the count.
            d.settle()
            baseline = d.sockets()
            while True:
                time.sleep(0.1)
                now = d.sockets()
                if now == baseline:
                    break
                baseline = now
            d.cgroup.reset()
            hostile.start()
            deadline = time.monotonic() + 15
            while d.sockets() - baseline < hostile.count and time.monotonic() < deadline:
                time.sleep(0.05)
            accepted = d.sockets() - baseline
            time.sleep(0.5)  # idle a moment with all of them in
            attacked = self.client_latencies(d)
            cpu, peak = d.cgroup.cpu_seconds(), d.cgroup.peak_bytes()
        finally:
            hostile.stop()
        q, a = statistics.median(quiet), statistics.median(attacked)
        return a, len(attacked), {"cpu": cpu, "peak": peak, "latency quiet": q, "latency under attack": a,
                                  "attack/quiet": a / q, "latency max quiet": max(quiet),
                                  "latency max under attack": max(attacked), "hostile accepted": accepted,
                                  "loris reconnects": hostile.reconnects}

    def dump(self, d, rep):
        path, size = self.big[d.kind]
        t = time.perf_counter()
        run_quiet(["nix", "store", "dump-path", path], d.client_env())
        wall = time.perf_counter() - t
        return wall, 1, {"GB/s": size / wall / 1e9}

    def nar(self, d, rep):
        path, size = self.big[d.kind]
        t = time.perf_counter()
        run_quiet(["nix", "store", "dump-path", "--store", "ssh-ng://localhost", path], d.client_env(ssh=True))
        wall = time.perf_counter() - t
        return wall, 1, {"GB/s": size / wall / 1e9}

    def imports(self, d, rep):
        # The same new paths for both daemons in a rep (their stores differ).
        closure = Closure(self.sizes["imports"], f"import{rep}", self.seed + 1000 + rep, 1024)
        stream_file = os.path.join(self.work_dir, f"import-{d.kind}-{rep}")
        with open(stream_file, "wb") as f:
            f.write(closure.export(d.store_dir))
        with open(stream_file, "rb") as stream:
            t = time.perf_counter()
            run_quiet(["nix-store", "--import"], d.client_env(), stdin=stream)
            wall = time.perf_counter() - t
        os.unlink(stream_file)
        return wall, self.sizes["imports"], {}

    def adds(self, d, rep):
        folder = os.path.join(self.work_dir, f"add-{d.kind}-{rep}")
        os.makedirs(folder)
        rng = random.Random(self.seed + 2000 + rep)
        files = []
        for i in range(self.sizes["adds"]):
            f = os.path.join(folder, f"file-{i}")
            with open(f, "wb") as out:
                out.write(f"add {rep} {i}\n".encode() + rng.randbytes(1024))
            files.append(f)
        env = d.client_env()
        t = time.perf_counter()
        for f in files:
            run_quiet(["nix-store", "--add", f], env)
        wall = time.perf_counter() - t
        shutil.rmtree(folder)
        return wall, len(files), {}

    def check(self, daemons):
        """Both daemons must give the same answers, or the timings mean
        nothing: path-info and query output (store dirs aside), and NARs."""
        def norm(d, out):
            return out.decode().replace(d.store_dir + "/", "/STORE/")
        answers = {}
        for d in daemons:
            top = self.top(d)
            info = sorted(norm(d, run_output(["nix", "path-info", "-r", top], d.client_env())).split())
            refs = norm(d, run_output(["nix-store", "-q", "--references", *self.query_batches(d)[0]], d.client_env()))
            path, size = self.big[d.kind]
            local = hashlib.sha256(run_output(["nix-store", "--dump", path], d.env("local"))).hexdigest()
            dumps = [hashlib.sha256(run_output(cmd, d.client_env(ssh))).hexdigest()
                     for cmd, ssh in ((["nix", "store", "dump-path", path], False),
                                      (["nix", "store", "dump-path", "--store", "ssh-ng://localhost", path], True))]
            if any(h != local for h in dumps):
                raise RuntimeError(f"{d.label}: the NAR sent differs from `nix-store --dump`")
            answers[d.kind] = (info, refs)
            if len(info) != self.sizes["closure"]:
                raise RuntimeError(f"{d.label}: path-info -r listed {len(info)} paths, not {self.sizes['closure']}")
        if answers["armitage"] != answers["cppnix"]:
            raise RuntimeError("armitage and CppNix answer path-info or --references differently")


WORKLOADS = ["path-info", "queries", "dump", "nar", "import", "add", "attack"]


def titles(n):
    return {
        "path-info": f"nix path-info -r ({n['closure']} paths)",
        "queries": f"{n['clients']} clients x {n['queries']} queries",
        "dump": f"nix store dump-path ({n['dump_mib']} MiB)",
        "nar": f"same over ssh-ng (NarFromPath)",
        "import": f"nix-store --import ({n['imports']} paths)",
        "add": f"{n['adds']} x nix-store --add",
        "attack": f"queries under attack ({n['idle'] + n['half_open'] + n['loris']} hostile)",
    }


# --- measuring and reporting ------------------------------------------------------

def measure(d, fn, rep):
    d.settle()
    d.cgroup.reset()
    wall, ops, extra = fn(d, rep)
    d.settle()
    return {"wall": wall, "cpu": d.cgroup.cpu_seconds(), "peak": d.cgroup.peak_bytes(), "ops": ops, **extra}


def argparser(doc, workloads, reps_help):
    """The options every benchmark script takes (bench/harness.sh passes
    --armitage, --scratch and --owner)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one rep, smaller sizes (a smoke run)")
    ap.add_argument("--reps", type=int, help=reps_help)
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(workloads))
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--armitage", required=True, help="the armitage binary")
    ap.add_argument("--scratch", required=True, help="a 0755 folder to make the stores in")
    ap.add_argument("--owner", type=int, default=os.getpid(), help="the PID that names the cgroups and work dir")
    return ap


def reps_and_workloads(ap, args, workloads):
    """The reps (5, or 1 with --quick) and the workloads chosen by --only."""
    reps = args.reps or (1 if args.quick else 5)
    chosen = workloads
    if args.only:
        chosen = [w for w in args.only.split(",") if w]
        unknown = set(chosen) - set(workloads)
        if unknown:
            ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return reps, chosen


def start_work(args, prefix):
    """Signals turned into a clean stop, and the run's work dir (named for
    bench/harness.sh's clean-up); returns the cgroup tag and the dir."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    work = tempfile.mkdtemp(prefix=f"{prefix}-", dir=args.scratch)
    os.chmod(work, 0o755)
    with open(os.path.join(work, "owner"), "w") as f:
        f.write(f"{args.owner}\n")
    return f"armitage-bench-{args.owner}", work


def main():
    ap = argparser(__doc__, WORKLOADS, "reps per workload and daemon (default 5; 1 with --quick)")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    reps, chosen = reps_and_workloads(ap, args, WORKLOADS)
    tag, work = start_work(args, "daemon")
    daemons = []
    try:
        bin_dir = os.path.join(work, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "ssh"), "w") as f:
            f.write(FAKE_SSH)
        os.chmod(os.path.join(bin_dir, "ssh"), 0o755)
        for kind, label in (("armitage", "armitage"), ("cppnix", "CppNix")):
            daemons.append(Daemon(kind, label, os.path.join(work, kind), f"{tag}-{kind}", args.armitage, bin_dir))
        wl = Workloads(sizes, work, random.randrange(1 << 30))
        big_src = os.path.join(work, "big")
        os.makedirs(big_src)
        for i in range(4):
            with open(os.path.join(big_src, f"blob{i}"), "wb") as f:
                f.write(os.urandom(sizes["dump_mib"] * 1024 * 1024 // 4))
        print(f"setting up two stores under {work} ...", file=sys.stderr)
        for d in daemons:
            wl.setup(d, big_src)
        shutil.rmtree(big_src)
        for d in daemons:
            d.start()
            with open(os.path.join(work, "pids"), "a") as f:
                f.write(f"{d.proc.pid}\n")
        wl.check(daemons)  # also warms both up

        functions = {"path-info": wl.path_info, "queries": wl.queries, "dump": wl.dump, "nar": wl.nar,
                     "import": wl.imports, "add": wl.adds, "attack": wl.attack}
        results = {}
        for key in chosen:
            runs = {d.kind: [] for d in daemons}
            for rep in range(reps):
                # Alternate who goes first.
                for d in (daemons if rep % 2 == 0 else daemons[::-1]):
                    runs[d.kind].append(measure(d, functions[key], rep))
                print(f"  {key}: rep {rep + 1}/{reps} done", file=sys.stderr)
            results[key] = runs
        report(results, sizes, reps)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d", time.gmtime()), "sizes": sizes, "reps": reps,
                           "results": results}, f, indent=1)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for d in daemons:
            d.stop()
        shutil.rmtree(work, ignore_errors=True)


PER_OP = {"path-info": "path", "queries": "query", "import": "path", "add": "add"}


def report(results, sizes, reps):
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    nix = subprocess.run(["nix", "--version"], stdout=subprocess.PIPE).stdout.decode().split()[-1]
    print(f"\nDaemons: armitage vs CppNix's nix-daemon {nix}, both driven by Nix {nix} clients; "
          f"{cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d', time.gmtime())}; medians of {reps} rep(s)\n")
    head = f"{'workload':<36} {'measure':<20} {'armitage':>11} {'CppNix':>11} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    ms = lambda s: f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.3f} s"
    us = lambda s: f"{s * 1e6:.0f} us"
    for key, runs in results.items():
        a, c = runs["armitage"], runs["cppnix"]
        med = lambda rs, f: statistics.median(f(x) for x in rs)
        rows = [("wall", lambda x: x["wall"], ms)]
        unit = PER_OP.get(key)
        if unit:
            rows.append((f"wall per {unit}", lambda x: x["wall"] / x["ops"], lambda s: f"{s * 1e3:.2f} ms"))
        rows.append(("daemon CPU", lambda x: x["cpu"], ms))
        if unit:
            rows.append((f"daemon CPU per {unit}", lambda x: x["cpu"] / x["ops"], us))
        rows.append(("peak memory", lambda x: x["peak"], lambda b: f"{b / 1048576:.1f} MiB"))
        for extra, f in (("queries/s", lambda v: f"{v:.0f}"), ("GB/s", lambda v: f"{v:.2f}"),
                         ("latency quiet", ms), ("latency under attack", ms), ("attack/quiet", lambda v: f"{v:.2f}")):
            if extra in a[0]:
                rows.append((extra, lambda x, e=extra: x[e], f))
        for i, (name, get, f) in enumerate(rows):
            va, vc = med(a, get), med(c, get)
            ratio = f"{va / vc:.2f}" if vc else "-"
            print(f"{titles(sizes)[key] if i == 0 else '':<36} {name:<20} {f(va):>11} {f(vc):>11} {ratio:>6}")
    print("\nratio: armitage / CppNix. Daemon CPU and peak memory are each daemon's cgroup: it and every")
    print("process it forks. Peak memory: memory.max_usage_in_bytes over the rep, less the page cache and")
    print("kernel memory charged to the group before it (what is left: RSS, and the kernel memory and page")
    print("cache added during the rep).")


if __name__ == "__main__":
    try:
        main()
    except Interrupted as e:
        print(f"bench/daemon.py: {e}", file=sys.stderr)
        sys.exit(130)
