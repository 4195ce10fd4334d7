#!/usr/bin/env python3
"""armitage's S3 client against awscli, side by side in one run, both
talking to the same local Garage S3 server: `armitage s3 cp` against
`aws s3 cp`, on a large object (1 GiB up, then down; wall, throughput, the
client's CPU per GiB and its peak memory, Garage's CPU) and on many small
ones (10 000 objects of 4 KiB with --recursive, up, then down; wall,
objects/s, the same CPU and memory figures).

    bench/s3.py                 # 3 rounds, 1 GiB and 10 000 objects of 4 KiB
    bench/s3.py --quick         # 1 round, 64 MiB and 500 objects: a smoke test
    bench/s3.py --check         # exit 1 when an enforced goal of bench/goals.toml is not met

What runs, each pinned with `taskset` (CPU 0 and CPU 1 by default;
`--client-cpus`, `--server-cpus` change that):
- Garage (`--garage PATH`, else `$ARMITAGE_GARAGE`, else the one
  scripts/install-test-deps built in the cache folder below, else `garage`
  on PATH), one
  node on the loopback as testkit/src/garage.rs starts it (SQLite
  metadata, replication factor 1, one imported key, one bucket), its data
  in the run's work folder, on CPU 1;
- the clients, one at a time, on CPU 0 (this script too, while it waits):
  `armitage s3 cp` (release build, made by `cargo build --release -p
  armitage` at the start; `--armitage PATH` takes another) and awscli's
  `aws s3 cp` (installed with pip into a venv under
  `${ARMITAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/armitage}/bench`
  when missing; `--aws PATH` takes another), each with its defaults: awscli
  10 requests in flight, 8 MiB parts; armitage 10 objects in flight
  (`--jobs`), 8 MiB parts, 4 in flight. Both get the key from
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; awscli gets a config file of
  its own in the work folder (region `garage`, path-style addressing) and
  `--endpoint-url`, armitage the bucket URL as CppNix spells it
  (`s3://bucket/key?endpoint=127.0.0.1:PORT&region=garage&scheme=http`).

Every upload sends new content (Garage stores blocks by their hash, and
would not write again a block it has): the large file is made once from
os.urandom and 16 new bytes are written at every 256 KiB before each
upload; the small files are written anew for each upload, each one
different. Each tool downloads what the other uploaded in the same round,
and the run checks every byte it got (SHA-256 of the large file, the
content of each small one). The disk is synced before each timed command.

Measures: wall is the client process's, from its start to its exit (the
client's start-up included); its CPU (utime + stime) is its rusage from
wait4; its peak memory is ru_maxrss as GNU time reports it (`time -f %M`:
started from this script, the client's ru_maxrss could not be below this
script's resident size); Garage's CPU is utime + stime of its process
(/proc/PID/stat) around the client. Every round runs each tool
once on each workload, who goes first alternating. The figures are
medians over the rounds with min-max; the ratios are armitage's over
awscli's. The run also says how much CPU other work on the machine used
meanwhile.

Results: a table on stdout and `bench/results/s3-DATE.json`
(`s3-DATE-quick.json` with --quick, which git ignores).
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare as C  # noqa: E402  (machine(), load(), machine_busy(), armitage_version())
import goals as G  # noqa: E402
import witness as W  # noqa: E402  (build_armitage(), cache_dir(), cpu_s(), free_port(), Procs, ...)

MIB = 1 << 20
GIB = 1 << 30
FULL = {"big_mib": 1024, "objects": 10000, "small_kib": 4}
QUICK = {"big_mib": 64, "objects": 500, "small_kib": 4}
ROUNDS = 3
TOOLS = ["armitage", "awscli"]
BUCKET = "bench"
REGION = "garage"
SALT_EVERY = 256 << 10
SMOKE = "SMOKE TEST (--quick: one round, reduced sizes): not for comparison"

progress = W.progress


def find_aws(given):
    """`--aws`, else the venv under the cache folder (made, with awscli
    installed by pip, when missing)."""
    if given:
        return given
    venv = os.path.join(W.cache_dir(), "bench", "awscli-venv")
    exe = os.path.join(venv, "bin", "aws")
    if not os.path.exists(exe):
        progress(f"installing awscli into {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "awscli"], check=True)
    return exe


def find_garage(given):
    """`--garage`, else $ARMITAGE_GARAGE, else the one scripts/install-test-deps
    built into the cache folder, else `garage` on PATH."""
    built = sorted(glob.glob(os.path.join(W.cache_dir(), "garage-*", "bin", "garage")))
    garage = given or os.environ.get("ARMITAGE_GARAGE") or (built[-1] if built else shutil.which("garage"))
    if not garage or not os.access(garage, os.X_OK):
        sys.exit("bench/s3.py: needs Garage: scripts/install-test-deps builds it (or set ARMITAGE_GARAGE, --garage)")
    return garage


# --- the server ----------------------------------------------------------------------------

class Garage:
    """One Garage node on the loopback, as testkit/src/garage.rs starts one:
    SQLite metadata, replication factor 1, a key imported, a bucket it owns."""

    def __init__(self, exe, work, cpus, procs):
        self.exe, self.dir = exe, os.path.join(work, "garage")
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "garage.toml")
        self.port, rpc = W.free_port(), W.free_port()
        with open(self.config, "w") as f:
            f.write(f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\ndb_engine = "sqlite"\n'
                    f'replication_factor = 1\nrpc_bind_addr = "127.0.0.1:{rpc}"\n'
                    f'rpc_public_addr = "127.0.0.1:{rpc}"\nrpc_secret = "{os.urandom(32).hex()}"\n\n'
                    f'[s3_api]\ns3_region = "{REGION}"\napi_bind_addr = "127.0.0.1:{self.port}"\n'
                    f'root_domain = ".s3.garage.localhost"\n')
        self.log = os.path.join(self.dir, "garage.log")
        with open(self.log, "w") as log:
            self.proc = procs.start(["taskset", "-c", cpus, exe, "-c", self.config, "server"],
                                    env={**os.environ, "RUST_LOG": "garage=warn"}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        W.wait_for_port(self.port, self.proc, "garage", timeout=30)
        node = self.cli("node", "id", "-q").strip().split("@")[0]
        self.cli("layout", "assign", "-z", "dc1", "-c", "100G", node)
        self.cli("layout", "apply", "--version", "1")
        self.key_id, self.secret = "GK" + os.urandom(12).hex(), os.urandom(32).hex()
        self.cli("key", "import", "--yes", "-n", "bench", self.key_id, self.secret)
        self.cli("bucket", "create", BUCKET)
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", self.key_id)

    def cli(self, *args):
        """`garage ARGS` against this node, tried again for a while as the
        node settles; its stdout."""
        deadline = time.monotonic() + 30
        while True:
            p = subprocess.run([self.exe, "-c", self.config, *args], env={**os.environ, "RUST_LOG": "warn"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode == 0:
                return p.stdout.decode()
            if time.monotonic() > deadline:
                raise RuntimeError(f"`garage {' '.join(args)}` failed: {p.stderr.decode()}{p.stdout.decode()}")
            time.sleep(0.2)

    def cpu(self):
        return W.cpu_s(self.proc.pid)


# --- the clients ---------------------------------------------------------------------------

class Clients:
    """The two tools' command lines, with their environment."""

    def __init__(self, armitage, aws, garage, work, cpus):
        self.armitage, self.aws, self.garage, self.cpus = armitage, aws, garage, cpus
        self.time = gnu_time()
        conf = os.path.join(work, "aws")
        os.makedirs(conf)
        # Path-style addressing (the bucket in the path, not in the host name).
        with open(os.path.join(conf, "config"), "w") as f:
            f.write(f"[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n")
        open(os.path.join(conf, "credentials"), "w").close()
        # armitage's own configuration: none (no [s3] section, no /etc file).
        self.armitage_conf = os.path.join(work, "armitage.toml")
        open(self.armitage_conf, "w").close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ACCESS_KEY_ID": garage.key_id, "AWS_SECRET_ACCESS_KEY": garage.secret,
                    "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": os.path.join(conf, "config"),
                    "AWS_SHARED_CREDENTIALS_FILE": os.path.join(conf, "credentials")})
        self.env = env

    def url(self, tool, key):
        if tool == "armitage":
            return f"s3://{BUCKET}/{key}?endpoint=127.0.0.1:{self.garage.port}&region={REGION}&scheme=http"
        return f"s3://{BUCKET}/{key}"

    def cp(self, tool, src, dst, recursive=False):
        """The command copying src to dst (one of them `("s3", key)`)."""
        src = self.url(tool, src[1]) if isinstance(src, tuple) else src
        dst = self.url(tool, dst[1]) if isinstance(dst, tuple) else dst
        rec = ["--recursive"] if recursive else []
        if tool == "armitage":
            cmd = [self.armitage, "s3", "cp", "--config", self.armitage_conf, *rec, src, dst]
        else:
            cmd = [self.aws, "--endpoint-url", f"http://127.0.0.1:{self.garage.port}", "s3", "cp",
                   "--only-show-errors", *rec, src, dst]
        return ["taskset", "-c", self.cpus, *cmd]


def gnu_time():
    """GNU time, which starts the client from its own small process: a
    process's ru_maxrss starts at the resident size of the process it was
    forked from (the kernel keeps the old memory's high-water mark across
    exec), so this script's own size would hide the client's."""
    exe = shutil.which("time")
    if not exe or "GNU" not in W.tool_version([exe, "--version"]):
        sys.exit("bench/s3.py: needs GNU time (the `time` package) for the clients' peak memory")
    return exe


def timed(clients, cmd, log):
    """Runs one client: its wall, CPU and peak memory, and Garage's CPU
    over it."""
    peak = log + ".peak"
    cmd = cmd[:3] + [clients.time, "-f", "%M", "-o", peak] + cmd[3:]
    os.sync()
    garage_cpu = clients.garage.cpu()
    with open(log, "w") as out:
        t = time.monotonic()
        p = subprocess.Popen(cmd, env=clients.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    server = clients.garage.cpu() - garage_cpu
    if p.returncode != 0:
        with open(log, errors="replace") as f:
            said = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[8:])}\nexited with {p.returncode}:\n{said}")
    with open(peak) as f:
        kib = int(f.read().split()[-1])
    # CPU: time's own (it only waits) and the client's, from wait4.
    return {"wall": wall, "client_cpu": ru.ru_utime + ru.ru_stime, "client_peak": kib / 1024, "server_cpu": server}


# --- the data ------------------------------------------------------------------------------

def make_big(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MIB)
            f.write(os.urandom(n))
            left -= n


def salt_big(path, size):
    """New bytes at every 256 KiB, so that no block of the file is one
    Garage already has; the file's SHA-256."""
    salt = os.urandom(16)
    fd = os.open(path, os.O_RDWR)
    try:
        for off in range(0, size, SALT_EVERY):
            os.pwrite(fd, salt, off)
    finally:
        os.close(fd)
    return sha256_file(path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


class Small:
    """The small objects: object i is `SALT i` and then random bytes, each
    upload with a new salt."""

    def __init__(self, count, size):
        self.count, self.size = count, size
        self.base = os.urandom(count * size)

    @staticmethod
    def name(i):
        return f"o{i:05d}"

    def content(self, salt, i):
        head = b"%s %d\n" % (salt.encode(), i)
        return head + self.base[i * self.size + len(head):(i + 1) * self.size]

    def write(self, folder, salt):
        os.makedirs(folder)
        for i in range(self.count):
            with open(os.path.join(folder, self.name(i)), "wb") as f:
                f.write(self.content(salt, i))

    def check(self, folder, salt, who):
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if names != [self.name(i) for i in range(self.count)]:
            raise RuntimeError(f"{who}: downloaded {len(names)} files into {folder}, not the {self.count} objects")
        for i in range(self.count):
            with open(os.path.join(folder, self.name(i)), "rb") as f:
                if f.read() != self.content(salt, i):
                    raise RuntimeError(f"{who}: {self.name(i)} came back different")


# --- the workloads -------------------------------------------------------------------------

def per_gib(m, size):
    gib = size / GIB
    m.update({"MiB/s": size / MIB / m["wall"], "client_cpu": m["client_cpu"] / gib,
              "server_cpu": m["server_cpu"] / gib})
    return m


def per_object(m, count):
    m.update({"objects/s": count / m["wall"], "client_cpu": m["client_cpu"] / count * 1e6,
              "server_cpu": m["server_cpu"] / count * 1e6})
    return m


# (row key, title, [(field, name, unit)]): the ratio is armitage's over awscli's.
def rows_for(sizes):
    big = [("wall", "wall", "s"), ("MiB/s", "throughput", "MiB/s"), ("client_cpu", "client CPU per GiB", "s"),
           ("client_peak", "client peak memory", "MiB"), ("server_cpu", "Garage CPU per GiB", "s")]
    small = [("wall", "wall", "s"), ("objects/s", "objects/s", "/s"), ("client_cpu", "client CPU per object", "us"),
             ("client_peak", "client peak memory", "MiB"), ("server_cpu", "Garage CPU per object", "us")]
    objs = f"{sizes['objects']} x {sizes['small_kib']} KiB objects"
    return [
        ("s3-upload", f"{sizes['big_mib']} MiB upload", big),
        ("s3-download", f"{sizes['big_mib']} MiB download", big),
        ("s3-small-upload", f"{objs}, upload --recursive", small),
        ("s3-small-download", f"{objs}, download --recursive", small),
    ]


def summarise(sizes, results):
    rows = []
    for key, title, fields in rows_for(sizes):
        measures = []
        for field, name, unit in fields:
            m = {"name": name, "field": field, "unit": unit}
            for tool in TOOLS:
                vals = [r[field] for r in results[key][tool]]
                if vals:
                    m[tool] = W.stats(vals)
            m["ratio_of"] = "armitage/awscli"
            m["ratio"] = (m["armitage"]["median"] / m["awscli"]["median"]
                          if "armitage" in m and "awscli" in m and m["awscli"]["median"] > 0 else None)
            measures.append(m)
        rows.append({"key": key, "title": title, "measures": measures})
    return rows


def fmt(v, unit):
    if unit in ("MiB/s", "/s", "us"):
        return f"{v:.0f}"
    if unit == "MiB":
        return f"{v:.1f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def cell(m, tool):
    s = m.get(tool)
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"], m["unit"])
    return f"{fmt(s['median'], m['unit'])} ({fmt(s['min'], m['unit'])}–{fmt(s['max'], m['unit'])})"


def table(data):
    w = (36, 26, 26, 9)
    head = f"{'measure':<{w[0]}} {'armitage':>{w[1]}} {'awscli':>{w[2]}} {'ratio':>{w[3]}}"
    lines = [head, "-" * len(head)]
    for row in data["rows"]:
        lines.append(row["title"])
        for m in row["measures"]:
            lines.append(f"  {m['name'] + ' (' + m['unit'] + ')':<{w[0] - 2}} {cell(m, 'armitage'):>{w[1]}} "
                         f"{cell(m, 'awscli'):>{w[2]}} {W.fmt_ratio(m['ratio']):>{w[3]}}")
    return lines


def markdown(data):
    lines = ["| measure | armitage | awscli | armitage/awscli |", "|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| **{row['title']}** | | | |")
        for m in row["measures"]:
            lines.append(f"| {m['name']} ({m['unit']}) | {cell(m, 'armitage')} | {cell(m, 'awscli')} | "
                         f"{W.fmt_ratio(m['ratio'])} |")
    return lines


# --- the run -------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 64 MiB and 500 objects: a smoke test")
    ap.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; 1 with --quick)")
    ap.add_argument("--size-mib", type=int, help="the large object's size in MiB")
    ap.add_argument("--objects", type=int, help="how many small objects")
    ap.add_argument("--armitage", help="an armitage binary to use instead of building one")
    ap.add_argument("--aws", help="an aws (awscli) to use instead of the cache's venv")
    ap.add_argument("--garage", help="a garage binary (default: $ARMITAGE_GARAGE, else the cache's, "
                    "else garage on PATH)")
    ap.add_argument("--client-cpus", default="0", help="CPUs of the clients (taskset -c; default 0)")
    ap.add_argument("--server-cpus", default="1", help="CPUs of Garage (default 1)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="where s3-DATE.json goes")
    ap.add_argument("--check", action="store_true", help="exit 1 when an enforced goal is not met")
    args = ap.parse_args()

    sizes = dict(QUICK if args.quick else FULL)
    if args.size_mib:
        sizes["big_mib"] = args.size_mib
    if args.objects:
        sizes["objects"] = args.objects
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    big, count = sizes["big_mib"] * MIB, sizes["objects"]
    if not shutil.which("taskset"):
        sys.exit("bench/s3.py: needs taskset")
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    load_start = C.load()

    garage_exe = find_garage(args.garage)
    armitage = args.armitage or W.build_armitage()
    aws = find_aws(args.aws)
    # This script waits on its clients; keep it off Garage's CPU.
    os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})

    base = os.environ.get("BENCH_DIR", "/var/tmp/armitage-bench")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="s3-", dir=base)
    procs = W.Procs()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        garage = Garage(garage_exe, work, args.server_cpus, procs)
        clients = Clients(armitage, aws, garage, work, args.client_cpus)
        log = os.path.join(work, "client.log")
        downloads = os.path.join(work, "downloads")
        progress(f"making the data: {sizes['big_mib']} MiB and {count} x {sizes['small_kib']} KiB")
        source = os.path.join(work, "big")
        make_big(source, big)
        small = Small(count, sizes["small_kib"] * 1024)

        # Warm-up, not counted: each tool's first start, both ways, on a
        # small object (and the awscli venv's files into the page cache).
        warm = os.path.join(work, "warm")
        os.makedirs(warm)
        with open(os.path.join(warm, "w"), "wb") as f:
            f.write(os.urandom(4096))
        for tool in TOOLS:
            timed(clients, clients.cp(tool, os.path.join(warm, "w"), ("s3", f"warm/{tool}")), log)
            timed(clients, clients.cp(tool, ("s3", f"warm/{tool}"), os.path.join(warm, tool)), log)

        keys = ("s3-upload", "s3-download", "s3-small-upload", "s3-small-download")
        results = {k: {t: [] for t in TOOLS} for k in keys}
        own_start, busy_start, t_rounds = C.own_process_cpu(), C.machine_busy(), time.monotonic()
        garage_start = garage.cpu()
        for rnd in range(rounds):
            order = TOOLS[rnd % 2:] + TOOLS[:rnd % 2]
            say = f"round {rnd + 1}/{rounds}"
            uploaded = {}
            for tool in order:
                sha = salt_big(source, big)
                key = f"big/r{rnd}-{tool}"
                m = per_gib(timed(clients, clients.cp(tool, source, ("s3", key)), log), big)
                results["s3-upload"][tool].append(m)
                uploaded[tool] = (key, sha)
                progress(f"{say}: {tool}: upload {sizes['big_mib']} MiB in {m['wall']:.2f} s ({m['MiB/s']:.0f} MiB/s), "
                         f"CPU {m['client_cpu']:.2f} s/GiB, peak {m['client_peak']:.0f} MiB")
            for tool in order:
                key, sha = uploaded[TOOLS[1 - TOOLS.index(tool)]]
                os.makedirs(downloads)
                dest = os.path.join(downloads, "big")
                m = per_gib(timed(clients, clients.cp(tool, ("s3", key), dest), log), big)
                got = os.path.getsize(dest) if os.path.exists(dest) else None
                if got != big or sha256_file(dest) != sha:
                    raise RuntimeError(f"{tool}: the download of {key} is not what was uploaded ({got} bytes)")
                shutil.rmtree(downloads)
                results["s3-download"][tool].append(m)
                progress(f"{say}: {tool}: download {sizes['big_mib']} MiB in {m['wall']:.2f} s "
                         f"({m['MiB/s']:.0f} MiB/s), CPU {m['client_cpu']:.2f} s/GiB, peak {m['client_peak']:.0f} MiB")
            uploaded = {}
            for tool in order:
                salt = os.urandom(8).hex()
                folder = os.path.join(work, "small")
                small.write(folder, salt)
                prefix = f"small/r{rnd}-{tool}"
                m = per_object(timed(clients, clients.cp(tool, folder, ("s3", prefix), recursive=True), log), count)
                shutil.rmtree(folder)
                results["s3-small-upload"][tool].append(m)
                uploaded[tool] = (prefix, salt)
                progress(f"{say}: {tool}: upload {count} objects in {m['wall']:.2f} s ({m['objects/s']:.0f}/s)")
            for tool in order:
                prefix, salt = uploaded[TOOLS[1 - TOOLS.index(tool)]]
                m = per_object(timed(clients, clients.cp(tool, ("s3", prefix + "/"), downloads, recursive=True),
                                     log), count)
                small.check(downloads, salt, tool)
                shutil.rmtree(downloads)
                results["s3-small-download"][tool].append(m)
                progress(f"{say}: {tool}: download {count} objects in {m['wall']:.2f} s ({m['objects/s']:.0f}/s)")
        rounds_s = time.monotonic() - t_rounds
        own = C.own_process_cpu() - own_start + garage.cpu() - garage_start
        busy = C.machine_busy() - busy_start
        other_cores = max(0.0, (busy - own) / rounds_s)
        versions = {"aws": W.tool_version([aws, "--version"]), "garage": W.tool_version([garage_exe, "--version"])}
    except RuntimeError as e:
        if "garage" in locals() and os.path.exists(garage.log):
            with open(garage.log, errors="replace") as f:
                tail = f.read()[-2000:]
            if tail:
                print(f"Garage's log, its end:\n{tail}", file=sys.stderr)
        sys.exit(f"bench/s3.py: {e}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    data = {
        "title": "armitage s3 cp against awscli's aws s3 cp, on a local Garage",
        "date": date,
        "command": " ".join(["bench/s3.py", *sys.argv[1:]]),
        "smoke_test": bool(args.quick),
        "note": SMOKE if args.quick else "",
        "armitage": C.armitage_version(),
        "rounds": rounds,
        "sizes": sizes,
        "cores": {"client": args.client_cpus, "server": args.server_cpus},
        "tools": {**versions, "python": sys.version.split()[0]},
        "server": "Garage, one node on the loopback, SQLite metadata, replication factor 1",
        "clients": "armitage s3 cp (10 objects in flight, 8 MiB parts, 4 in flight); aws s3 cp, its defaults "
                   "(10 requests in flight, 8 MiB parts), path-style",
        "machine": {**C.machine(), "load_start": load_start, "load_end": C.load(),
                    "other_cpu_cores": round(other_cores, 2), "rounds_s": round(rounds_s, 1)},
        "duration_s": round(time.monotonic() - started),
    }
    data["rows"] = summarise(sizes, results)
    data["raw"] = results
    goals = [g for g in G.load() if g.get("row", "").startswith("s3-")]
    data["goals"] = [{"what": g["what"], "ratio": ratio, "bound": " ".join(map(str, G.bound(g))), "met": ok,
                      "enforce": g["enforce"]} for g, ratio, ok in G.goal_results(data, goals)]

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"s3-{date}{'-quick' if args.quick else ''}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")

    m = data["machine"]
    if args.quick:
        print(SMOKE)
    print(f"{date}, armitage {data['armitage']}, {versions['aws']}, {versions['garage']}, {rounds} round(s), "
          f"{m['cpu']} x{m['cores']}; clients on CPU {args.client_cpus}, Garage on CPU {args.server_cpus}; load "
          f"{m['load_start'][0]:.2f} at the start; other work used {m['other_cpu_cores']:.2f} cores meanwhile")
    print("\n".join(table(data)))
    print("median (min–max) over the rounds; ratio: armitage's median over awscli's")
    print()
    print("\n".join(markdown(data)))
    print()
    failed = False
    for g in data["goals"]:
        state = "met" if g["met"] else "NOT met" + ("" if g["enforce"] else " (not enforced)")
        print(f"goal: {g['what']}: {W.fmt_ratio(g['ratio'])}, {g['bound']}: {state}")
        failed |= g["enforce"] and g["met"] is False
    print(f"written: {os.path.relpath(path)}")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
