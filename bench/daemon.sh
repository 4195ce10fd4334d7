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
#   - 500 x nix-store --add, one process each,
#   - the 16 query clients' latency with 308 hostile connections (idle,
#     half-open, slow-loris) against their latency on a quiet daemon.
# The workloads run in bench/daemon.py; this script builds armitage, checks
# what is needed and cleans up after it whatever happens. See bench/README.md.
#
# Usage: bench/daemon.sh [--quick] [--reps N] [--only path-info,queries,dump,nar,import,add,attack] [--json FILE]
#   --quick: one rep, smaller sizes (a smoke run); --reps: default 5.
#   BENCH_DIR: where the stores go (default /var/tmp/armitage-bench).
# Needs root (cgroups; and the nix-daemon runs as root) and Nix 2.8
# (scripts/install-test-deps installs it), python3 and cgroup v1 cpuacct and
# memory hierarchies under /sys/fs/cgroup.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=daemon
tools="nix nix-store nix-daemon python3"
. bench/harness.sh
