#!/usr/bin/env bash
# Daemon benchmark: armitage's daemon against CppNix's nix-daemon (Debian's
# Nix 2.8), both driven by the same Nix 2.8 client binaries, alternately rep
# by rep, each on its own throwaway store under /var/tmp and in its own
# cgroup (v1 cpuacct + memory: the daemon and everything it forks). Prints
# medians and armitage/CppNix ratios of wall time, daemon CPU time and peak
# memory for:
#   - nix path-info -r of a 2000-path closure,
#   - 16 clients at once, each one `nix-store -q --references` of 200 paths,
#   - nix store dump-path of a 200 MiB path (over the socket, where a 2.8
#     client reads the files itself), and the same over ssh-ng (NarFromPath),
#   - nix-store --import of a 500-path closure,
#   - 500 x nix-store --add, one process each.
# The workloads run in bench/daemon.py; this script builds armitage, checks
# what is needed and cleans up after it whatever happens. See bench/README.md.
#
# Usage: bench/daemon.sh [--quick] [--reps N] [--only path-info,queries,dump,nar,import,add] [--json FILE]
#   --quick: one rep, smaller sizes (a smoke run); --reps: default 5.
#   BENCH_DIR: where the stores go (default /var/tmp/armitage-bench).
# Needs root (cgroups; and the nix-daemon runs as root) and Nix 2.8
# (scripts/install-test-deps installs it), python3 and cgroup v1 cpuacct and
# memory hierarchies under /sys/fs/cgroup.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench/daemon.sh needs root: it puts each daemon in a cgroup of its own" >&2; exit 1; }
for tool in nix nix-store nix-daemon python3; do
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

# daemon.py cleans up after itself; this is for when it cannot (killed).
py_pid=
cleanup() {
  if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
  for work in "$scratch"/daemon-*; do
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

python3 bench/daemon.py --armitage "$armitage" --scratch "$scratch" --owner "$$" "$@" &
py_pid=$!
wait "$py_pid"
