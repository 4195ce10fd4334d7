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

bench=build
tools="nix nix-store nix-instantiate nix-daemon python3 ldd"
. bench/harness.sh
