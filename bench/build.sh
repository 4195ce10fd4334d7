#!/usr/bin/env bash
# Build benchmark: armitage's daemon against CppNix's nix-daemon (Debian's
# Nix 2.8) building derivations, both driven by the same Nix 2.8 client
# binaries, alternately rep by rep, each on its own throwaway store under
# /var/tmp and in its own cgroup (v1 cpuacct + memory: the daemon, its
# builders and everything else it forks). Prints medians (p50/p99 where
# single commands are timed) and armitage/CppNix ratios of wall time and
# daemon CPU time for:
#   - a no-op `nix-store --realise` of a built .drv,
#   - a 200-derivation graph (leaves and joins) from nothing, max-jobs 2,
#     sandbox off,
#   - the sandbox's cost: a trivial build with the sandbox on less off,
#   - substituting a 300-path closure from a signed, zstd-compressed
#     binary cache served over HTTP on the loopback.
# The workloads run in bench/build.py (with bench/daemon.py's daemons and
# cgroups); this script builds armitage, checks what is needed and cleans
# up after it whatever happens. See bench/README.md.
#
# Usage: bench/build.sh [--quick] [--reps N] [--sandbox-builds N] [--only noop,graph,sandbox,subst] [--json FILE]
#   --quick: one rep, smaller sizes (a smoke run); --reps: default 5.
#   BENCH_DIR: where the stores go (default /var/tmp/armitage-bench).
# Needs root (cgroups, the sandbox; the nix-daemon runs as root), Nix 2.8
# (scripts/install-test-deps installs it), python3, ldd, and cgroup v1
# cpuacct and memory hierarchies under /sys/fs/cgroup.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench/build.sh needs root: it puts each daemon in a cgroup of its own" >&2; exit 1; }
for tool in nix nix-store nix-instantiate nix-daemon python3 ldd; do
  command -v "$tool" >/dev/null || { echo "$tool not found: run scripts/install-test-deps first" >&2; exit 1; }
done
case $(nix-store --version) in
  *" 2.8."*) ;;
  *) echo "expected Nix 2.8 on PATH, found: $(nix-store --version)" >&2; exit 1 ;;
esac
for c in cpuacct memory; do
  [ -w "/sys/fs/cgroup/$c/cgroup.procs" ] || { echo "no writable cgroup v1 '$c' hierarchy at /sys/fs/cgroup/$c" >&2; exit 1; }
done

cargo build --release -q -p armitage
armitage=$PWD/target/release/armitage

# The stores' parent must be reachable by build users: not a 0700 mktemp dir.
scratch=${BENCH_DIR:-/var/tmp/armitage-bench}
mkdir -p "$scratch"
chmod 0755 "$scratch"

# build.py cleans up after itself; this is for when it cannot (killed).
py_pid=
cleanup() {
  if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
  for work in "$scratch"/build-*; do
    [ -e "$work/owner" ] && [ "$(cat "$work/owner")" = "$$" ] || continue
    if [ -f "$work/pids" ]; then
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$work/pids"
    fi
    rm -rf "$work"
  done
  for c in cpuacct memory; do
    own=$(awk -F: -v c="$c" '{ n = split($2, cs, ","); for (i = 1; i <= n; i++) if (cs[i] == c) print $3 }' /proc/self/cgroup)
    for g in "/sys/fs/cgroup/$c${own%/}"/armitage-bench-"$$"-*; do
      [ -d "$g" ] || continue
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$g/cgroup.procs"
      sleep 0.1
      rmdir "$g" 2>/dev/null || true
    done
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 bench/build.py --armitage "$armitage" --scratch "$scratch" --owner "$$" "$@" &
py_pid=$!
wait "$py_pid"
