# Shared by bench/daemon.sh, bench/build.sh and bench/compare (sourced,
# from the repository's root): checks what the benchmarks need, builds
# armitage, runs `bench/$bench.py` and cleans up after it whatever happens.
# The caller sets `bench` (the workload script's name, which also prefixes
# its work dirs), `tools` (the commands it needs on PATH) and optionally
# `entry` (its own name, for messages).

entry=${entry:-bench/$bench.sh}
[ "$(id -u)" = 0 ] || { echo "$entry needs root: it puts each daemon in a cgroup of its own" >&2; exit 1; }
for tool in $tools; do
  command -v "$tool" >/dev/null || { echo "$tool not found: run scripts/install-test-deps first" >&2; exit 1; }
done
case $(nix --version) in
  *" 2.8."*) ;;
  *) echo "expected Nix 2.8 on PATH, found: $(nix --version)" >&2; exit 1 ;;
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

# The Python side cleans up after itself; this is for when it cannot (killed).
py_pid=
cleanup() {
  if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
  for work in "$scratch"/"$bench"-*; do
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

python3 "bench/$bench.py" --armitage "$armitage" --scratch "$scratch" --owner "$$" "$@" &
py_pid=$!
wait "$py_pid"
