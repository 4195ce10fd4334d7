#!/usr/bin/env python3
"""The witness proxy's speed, side by side in one run with a direct
download and with mitmproxy's `mitmdump`: a large HTTPS download from a
loopback origin (1 GiB; wall, throughput, the proxy's CPU per GiB and its
peak memory) and 1000 small files fetched one after the other on one
connection (per-request latency p50/p99, the proxy's CPU per request).

    bench/witness.py                 # 3 rounds, 1 GiB and 1000 files of 4 KiB
    bench/witness.py --quick         # 1 round, 64 MiB and 100 files: a smoke test
    bench/witness.py --check         # exit 1 when an enforced goal of bench/goals.toml is not met

What runs, each pinned with `taskset` (on any machine: CPU 0 and CPU 1,
`--origin-cpus`, `--client-cpus`, `--proxy-cpus` change that):
- the origin and the client share CPU 0; the proxy has CPU 1 to itself
  (idle in the direct runs). Origin and client do the same work whichever
  way the bytes go, so what changes between the three is the proxy;
- the origin: a threaded Python HTTPS server (HTTP/1.1, keep-alive, TLS
  from Python's ssl module) serving `/big` (zeros written from memory in
  1 MiB pieces: no file, no compression) and `/small/<i>` (4 KiB each,
  different content each, head and body in one write);
- the client: `curl --http1.1 -o /dev/null` (the direct run verifies the
  origin with the test CA; through a proxy curl trusts the proxy's CA, as
  it must for an intercepting proxy); the small files are one curl process
  given the 1000 URLs (`-K` list), reusing its connection (its CONNECT
  tunnel through a proxy), each transfer's `%{time_total}` its latency;
- `armitage witness proxy` (release build, made by `cargo build --release
  -p armitage` at the start), its archive and CA in the run's work folder,
  keeping every body and record as it does for builds;
- `mitmdump` (mitmproxy, installed with pip into a venv under
  `${ARMITAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/armitage}/bench`
  when missing; `--mitmdump PATH` takes another), quiet (`-q`), with
  `stream_large_bodies=1m` so that it streams the large body as the witness
  does (by default it would hold the whole body in memory), trusting the
  test CA upstream.

The CA and the origin's certificate are made with the `openssl` CLI.
Measures: the proxy's CPU is utime+stime of its process (/proc/PID/stat)
before and after; its peak memory is VmHWM, reset before each measurement
(/proc/PID/clear_refs); wall and bytes are curl's (`time_total`,
`size_download`); the origin's CPU comes from /proc too, the client's from
its rusage. Every round runs each way once, who goes first rotating. The
figures are medians over the rounds with min-max; the ratios are the
witness's against the direct run (wall, throughput, latency) and against
mitmdump (CPU, memory, latency). The run also says how much CPU other
work on the machine used meanwhile.

Results: a table on stdout and `bench/results/witness-DATE.json`
(`witness-DATE-quick.json` with --quick, which git ignores).
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare as C  # noqa: E402  (machine(), load(), machine_busy(), armitage_version())
import goals as G  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
FULL = {"big_mib": 1024, "files": 1000, "small_kib": 4}
QUICK = {"big_mib": 64, "files": 100, "small_kib": 4}
ROUNDS = 3
MODES = ["direct", "witness", "mitmdump"]
TICK = os.sysconf("SC_CLK_TCK")
SMOKE = "SMOKE TEST (--quick: one round, reduced sizes): not for comparison"

# The origin: a threaded HTTPS server on the loopback. Each connection's
# TLS handshake happens in its own thread. Prints its port.
ORIGIN_PY = r'''
import http.server, ssl, sys

cert, key, big, small = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
CHUNK = memoryview(bytes(1 << 20))

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def head(self, status, length):
        return (b"HTTP/1.1 %d x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % (status, length))

    def do_GET(self):
        if self.path == "/big":
            self.wfile.write(self.head(200, big))
            left = big
            while left:
                n = min(left, len(CHUNK))
                self.wfile.write(CHUNK[:n])
                left -= n
        elif self.path.startswith("/small/") and self.path[7:].isdigit():
            line = b"%07d\n" % int(self.path[7:])
            body = (line * (small // len(line) + 1))[:small]
            self.wfile.write(self.head(200, small) + body)
        else:
            self.wfile.write(self.head(404, 0))

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def finish_request(self, request, client_address):
        try:
            tls = context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request, client_address):
        pass

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


def progress(msg):
    print(f"  {msg}", file=sys.stderr, flush=True)


def cache_dir():
    """Where downloads are kept between runs (never in the checkout)."""
    if os.environ.get("ARMITAGE_CACHE_DIR"):
        return os.environ["ARMITAGE_CACHE_DIR"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "armitage")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, **kw).stdout.decode()


# --- the parts: armitage, mitmdump, certificates, processes --------------------------

def build_armitage():
    """`cargo build --release -p armitage`; the binary's path."""
    progress("cargo build --release -p armitage")
    out = run(["cargo", "build", "--release", "-p", "armitage", "--message-format=json-render-diagnostics"],
              cwd=REPO)
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "armitage" \
                and "bin" in msg["target"]["kind"] and msg.get("executable"):
            return msg["executable"]
    raise RuntimeError("cargo built no armitage binary")


def find_mitmdump(given):
    """`--mitmdump`, else the venv under the cache folder (made, with
    mitmproxy installed by pip, when missing)."""
    if given:
        return given
    venv = os.path.join(cache_dir(), "bench", "mitmproxy-venv")
    exe = os.path.join(venv, "bin", "mitmdump")
    if not os.path.exists(exe):
        progress(f"installing mitmproxy into {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "mitmproxy"], check=True)
    return exe


def tool_version(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def make_certs(work):
    """A test CA and the origin's certificate (127.0.0.1, localhost), by
    the openssl CLI: (ca.pem, origin.pem, origin.key)."""
    ca_key, ca, key, csr, cert, ext = (os.path.join(work, n) for n in
                                       ("ca.key", "ca.pem", "origin.key", "origin.csr", "origin.pem", "origin.ext"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    quiet = {"stderr": subprocess.DEVNULL}
    run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=armitage witness bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **quiet)
    run(["openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], **quiet)
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext], **quiet)
    return ca, cert, key


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} in {timeout} s")


class Procs:
    """The servers this run started, stopped by their PIDs at the end."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_s(pid):
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


# --- one measurement -------------------------------------------------------------------

class Way:
    """One way to the origin: direct, or through a proxy (its process,
    its URL, the CA curl trusts through it)."""

    def __init__(self, name, cacert, proc=None, proxy_url=None):
        self.name, self.cacert, self.proc, self.proxy_url = name, cacert, proc, proxy_url

    def curl(self, cpus, args):
        cmd = ["taskset", "-c", cpus, "curl", "-sS", "--fail", "--http1.1", "--cacert", self.cacert]
        if self.proxy_url:
            cmd += ["--proxy", self.proxy_url]
        return cmd + args


def timed_client(cmd):
    """Runs the client; (stdout, its CPU seconds)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:12])} ... exited with {p.returncode}")
    return out.decode(), ru.ru_utime + ru.ru_stime


def measure(way, origin, cpus, client_args, settle=0.3):
    """Runs one client through `way`: its output, the client's CPU, and the
    origin's and the proxy's CPU and the proxy's peak memory over it."""
    proxy = way.proc.pid if way.proc else None
    if proxy:
        reset_peak(proxy)
        proxy_cpu = cpu_s(proxy)
    origin_cpu = cpu_s(origin.pid)
    out, client_cpu = timed_client(way.curl(cpus, client_args))
    # A body's record is kept as the body ends, maybe after the client has it.
    time.sleep(settle)
    m = {"client_cpu": client_cpu, "origin_cpu": cpu_s(origin.pid) - origin_cpu}
    if proxy:
        m["proxy_cpu"] = cpu_s(proxy) - proxy_cpu
        m["proxy_peak"] = peak_mib(proxy)
    return out, m


def download(way, origin, port, cpus, size):
    out, m = measure(way, origin, cpus, ["-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}",
                                         f"https://127.0.0.1:{port}/big"])
    wall, got, code = out.split()
    if int(got) != size or code != "200":
        raise RuntimeError(f"{way.name}: the download got {got} bytes, status {code}; expected {size}, 200")
    wall = float(wall)
    gib = size / GIB
    m.update({"wall": wall, "MiB/s": size / MIB / wall, "client_cpu": m["client_cpu"] / gib,
              "origin_cpu": m["origin_cpu"] / gib})
    if "proxy_cpu" in m:
        m["proxy_cpu"] /= gib
    return m


def small_files(way, origin, port, cpus, files, config):
    t = time.monotonic()
    out, m = measure(way, origin, cpus, ["-w", "%{time_total} %{size_download} %{http_code}\\n", "-K", config])
    total = time.monotonic() - t
    lat = []
    for line in out.splitlines():
        secs, _, code = line.split()
        if code != "200":
            raise RuntimeError(f"{way.name}: a small file came with status {code}")
        lat.append(float(secs))
    if len(lat) != files:
        raise RuntimeError(f"{way.name}: {len(lat)} small files fetched, not {files}")
    lat.sort()
    m.update({"p50": lat[len(lat) // 2] * 1000, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
              "wall": total, "client_cpu": m["client_cpu"] / files * 1e6, "origin_cpu": m["origin_cpu"] / files * 1e6})
    if "proxy_cpu" in m:
        m["proxy_cpu"] = m["proxy_cpu"] / files * 1e6
    return m


# --- summary ----------------------------------------------------------------------------

# (row key, title, [(field, name, unit, ratio of)]): the ratio a goal bounds.
def rows_for(sizes):
    return [
        ("witness-download", f"{sizes['big_mib']} MiB HTTPS download", [
            ("wall", "wall", "s", "direct"),
            ("MiB/s", "throughput", "MiB/s", "direct"),
            ("proxy_cpu", "proxy CPU per GiB", "s", "mitmdump"),
            ("proxy_peak", "proxy peak memory", "MiB", "mitmdump"),
            ("origin_cpu", "origin CPU per GiB", "s", "direct"),
            ("client_cpu", "client CPU per GiB", "s", "direct"),
        ]),
        ("witness-small", f"{sizes['files']} x {sizes['small_kib']} KiB files, one connection", [
            ("p50", "latency p50", "ms", "direct"),
            ("p99", "latency p99", "ms", "direct"),
            ("wall", "wall, all files", "s", "direct"),
            ("proxy_cpu", "proxy CPU per request", "us", "mitmdump"),
            ("proxy_peak", "proxy peak memory", "MiB", "mitmdump"),
            ("origin_cpu", "origin CPU per request", "us", "direct"),
        ]),
    ]


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def summarise(sizes, results):
    rows = []
    for key, title, fields in rows_for(sizes):
        measures = []
        for field, name, unit, against in fields:
            m = {"name": name, "field": field, "unit": unit}
            for mode in MODES:
                vals = [r[field] for r in results[key][mode] if field in r]
                if vals:
                    m[mode] = stats(vals)
            ratios = {}
            for other in ("direct", "mitmdump"):
                if "witness" in m and other in m and m[other]["median"] > 0:
                    ratios[f"witness/{other}"] = m["witness"]["median"] / m[other]["median"]
            m["ratios"] = ratios
            m["ratio_of"] = f"witness/{against}"
            m["ratio"] = ratios.get(m["ratio_of"])
            measures.append(m)
        rows.append({"key": key, "title": title, "measures": measures})
    return rows


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("MiB/s", "us"):
        return f"{v:.0f}"
    if unit == "MiB":
        return f"{v:.1f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def cell(m, mode):
    s = m.get(mode)
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"], m["unit"])
    return f"{fmt(s['median'], m['unit'])} ({fmt(s['min'], m['unit'])}–{fmt(s['max'], m['unit'])})"


def table(data):
    w = (44, 26, 26, 26, 9, 9)
    head = (f"{'measure':<{w[0]}} {'direct':>{w[1]}} {'witness':>{w[2]}} {'mitmdump':>{w[3]}} "
            f"{'w/direct':>{w[4]}} {'w/mitm':>{w[5]}}")
    lines = [head, "-" * len(head)]
    for row in data["rows"]:
        lines.append(row["title"])
        for m in row["measures"]:
            r = m["ratios"]
            lines.append(f"  {m['name'] + ' (' + m['unit'] + ')':<{w[0] - 2}} {cell(m, 'direct'):>{w[1]}} "
                         f"{cell(m, 'witness'):>{w[2]}} {cell(m, 'mitmdump'):>{w[3]}} "
                         f"{fmt_ratio(r.get('witness/direct')):>{w[4]}} {fmt_ratio(r.get('witness/mitmdump')):>{w[5]}}")
    return lines


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def markdown(data):
    lines = ["| measure | direct | witness | mitmdump | witness/direct | witness/mitmdump |",
             "|---|---|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| **{row['title']}** | | | | | |")
        for m in row["measures"]:
            r = m["ratios"]
            lines.append(f"| {m['name']} ({m['unit']}) | {cell(m, 'direct')} | {cell(m, 'witness')} | "
                         f"{cell(m, 'mitmdump')} | {fmt_ratio(r.get('witness/direct'))} | "
                         f"{fmt_ratio(r.get('witness/mitmdump'))} |")
    return lines


# --- the run ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 64 MiB and 100 files: a smoke test")
    ap.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; 1 with --quick)")
    ap.add_argument("--size-mib", type=int, help="the large download's size in MiB")
    ap.add_argument("--files", type=int, help="how many small files")
    ap.add_argument("--armitage", help="an armitage binary to use instead of building one")
    ap.add_argument("--mitmdump", help="a mitmdump to use instead of the cache's venv")
    ap.add_argument("--origin-cpus", default="0", help="CPUs of the origin (taskset -c; default 0)")
    ap.add_argument("--client-cpus", default="0", help="CPUs of the client (default 0)")
    ap.add_argument("--proxy-cpus", default="1", help="CPUs of the proxy (default 1)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="where witness-DATE.json goes")
    ap.add_argument("--check", action="store_true", help="exit 1 when an enforced goal is not met")
    args = ap.parse_args()

    sizes = dict(QUICK if args.quick else FULL)
    if args.size_mib:
        sizes["big_mib"] = args.size_mib
    if args.files:
        sizes["files"] = args.files
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    big = sizes["big_mib"] * MIB
    for tool in ("curl", "openssl", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench/witness.py: needs {tool}")
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    load_start = C.load()

    armitage = args.armitage or build_armitage()
    mitmdump = find_mitmdump(args.mitmdump)
    # This script waits on its clients; keep it off the proxy's CPU.
    os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})

    base = os.environ.get("BENCH_DIR", "/var/tmp/armitage-bench")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="witness-", dir=base)
    procs = Procs()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        ca, cert, key = make_certs(work)
        origin = procs.start(["taskset", "-c", args.origin_cpus, sys.executable, "-c", ORIGIN_PY, cert, key,
                              str(big), str(sizes["small_kib"] * 1024)], stdout=subprocess.PIPE)
        port = int(origin.stdout.readline())
        config = os.path.join(work, "small.curlrc")
        with open(config, "w") as f:
            for i in range(sizes["files"]):
                f.write(f'url = "https://127.0.0.1:{port}/small/{i}"\noutput = "/dev/null"\n')

        ways = {"direct": Way("direct", ca)}
        witness_dir = os.path.join(work, "witness")
        wp = procs.start(["taskset", "-c", args.proxy_cpus, armitage, "witness", "proxy", "--dir", witness_dir,
                          "--listen", "127.0.0.1:0", "--ssl-cert-file", ca], stdout=subprocess.PIPE)
        line = wp.stdout.readline().decode()
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if "proxy" not in fields:
            raise RuntimeError(f"armitage witness proxy said {line!r}")
        ways["witness"] = Way("witness", fields["ca-bundle"], wp, fields["proxy"])

        mitm_conf = os.path.join(work, "mitmproxy")
        mport = free_port()
        mp = procs.start(["taskset", "-c", args.proxy_cpus, mitmdump, "-q", "--listen-host", "127.0.0.1",
                          "--listen-port", str(mport), "--set", f"confdir={mitm_conf}",
                          "--set", f"ssl_verify_upstream_trusted_ca={ca}", "--set", "stream_large_bodies=1m"],
                         stdout=subprocess.DEVNULL)
        wait_for_port(mport, mp, "mitmdump")
        ways["mitmdump"] = Way("mitmdump", os.path.join(mitm_conf, "mitmproxy-ca-cert.pem"), mp,
                               f"http://127.0.0.1:{mport}")

        # Warm-up, not counted: every way's first connection, the proxies'
        # certificates for 127.0.0.1, the origin's first threads.
        warm = os.path.join(work, "warm.curlrc")
        with open(warm, "w") as f:
            for i in range(20):
                f.write(f'url = "https://127.0.0.1:{port}/small/{i}"\noutput = "/dev/null"\n')
        for mode in MODES:
            small_files(ways[mode], origin, port, args.client_cpus, 20, warm)

        results = {"witness-download": {m: [] for m in MODES}, "witness-small": {m: [] for m in MODES}}
        own_start, busy_start, t_rounds = C.own_process_cpu(), C.machine_busy(), time.monotonic()
        servers_start = sum(cpu_s(p.pid) for p in (origin, wp, mp))
        for rnd in range(rounds):
            order = MODES[rnd % 3:] + MODES[:rnd % 3]
            for mode in order:
                m = download(ways[mode], origin, port, args.client_cpus, big)
                results["witness-download"][mode].append(m)
                progress(f"round {rnd + 1}/{rounds}: {mode}: {sizes['big_mib']} MiB in {m['wall']:.2f} s "
                         f"({m['MiB/s']:.0f} MiB/s)" + (f", proxy CPU {m['proxy_cpu']:.2f} s/GiB"
                                                         if "proxy_cpu" in m else ""))
            for mode in order:
                m = small_files(ways[mode], origin, port, args.client_cpus, sizes["files"], config)
                results["witness-small"][mode].append(m)
                progress(f"round {rnd + 1}/{rounds}: {mode}: {sizes['files']} files, p50 {m['p50']:.2f} ms, "
                         f"p99 {m['p99']:.2f} ms")
        rounds_s = time.monotonic() - t_rounds
        own = C.own_process_cpu() - own_start + sum(cpu_s(p.pid) for p in (origin, wp, mp)) - servers_start
        busy = C.machine_busy() - busy_start
        other_cores = max(0.0, (busy - own) / rounds_s)

        # Every download through the witness left a record with its body.
        listed = json.loads(run([armitage, "witness", "ls", "--json", "--dir", witness_dir]))
        bigs = [r for r in listed if r["url"].endswith("/big") and (r.get("body") or {}).get("size") == big]
        if len(bigs) != rounds:
            raise RuntimeError(f"the witness archive holds {len(bigs)} records of the download, not {rounds}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    data = {
        "title": "witness proxy against a direct download and mitmdump",
        "date": date,
        "command": " ".join(["bench/witness.py", *sys.argv[1:]]),
        "smoke_test": bool(args.quick),
        "note": SMOKE if args.quick else "",
        "armitage": C.armitage_version(),
        "rounds": rounds,
        "sizes": sizes,
        "cores": {"origin": args.origin_cpus, "client": args.client_cpus, "proxy": args.proxy_cpus},
        "tools": {"curl": tool_version(["curl", "--version"]), "mitmdump": tool_version([mitmdump, "--version"]),
                  "openssl": tool_version(["openssl", "version"]), "python": sys.version.split()[0]},
        "origin": "threaded Python HTTPS server (ssl module), HTTP/1.1 keep-alive, body from memory",
        "client": "curl --http1.1; small files: one curl process, a -K list of URLs, one connection",
        "machine": {**C.machine(), "load_start": load_start, "load_end": C.load(),
                    "other_cpu_cores": round(other_cores, 2), "rounds_s": round(rounds_s, 1)},
        "duration_s": round(time.monotonic() - started),
    }
    data["rows"] = summarise(sizes, results)
    data["raw"] = results
    goals = [g for g in G.load() if g.get("row", "").startswith("witness-")]
    data["goals"] = [{"what": g["what"], "ratio": ratio, "bound": " ".join(map(str, G.bound(g))), "met": ok,
                      "enforce": g["enforce"]} for g, ratio, ok in G.goal_results(data, goals)]

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"witness-{date}{'-quick' if args.quick else ''}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")

    m = data["machine"]
    if args.quick:
        print(SMOKE)
    print(f"{date}, armitage {data['armitage']}, {rounds} round(s), {m['cpu']} x{m['cores']}; origin on CPU "
          f"{args.origin_cpus}, client on CPU {args.client_cpus}, proxy on CPU {args.proxy_cpus}; load "
          f"{m['load_start'][0]:.2f} at the start; other work used {m['other_cpu_cores']:.2f} cores meanwhile")
    print("\n".join(table(data)))
    print("median (min–max) over the rounds; w/direct, w/mitm: the witness's median over the direct run's "
          "and mitmdump's")
    print()
    print("\n".join(markdown(data)))
    print()
    failed = False
    for g in data["goals"]:
        state = "met" if g["met"] else "NOT met" + ("" if g["enforce"] else " (not enforced)")
        print(f"goal: {g['what']}: {fmt_ratio(g['ratio'])}, {g['bound']}: {state}")
        failed |= g["enforce"] and g["met"] is False
    print(f"written: {os.path.relpath(path)}")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
