#!/usr/bin/env bash
# NAR serialisation + SHA-256 throughput, armitage against CppNix and the
# CPU's own SHA-256 speed, in one run on the same trees:
#   - `openssl speed -evp sha256` with 16 KiB blocks (the ceiling),
#   - `armitage hash path --type sha256` (NAR + SHA-256 in one pass),
#   - `nix-hash --type sha256` (CppNix's NAR + SHA-256),
#   - `nix-store --dump | sha256sum`.
# Trees: a 1 GiB tree of a few large files, and a tree of 100k small files.
# They are built once and kept under $BENCH_DIR (default
# /var/tmp/armitage-bench); timings are warm-cache medians of $ROUNDS runs.
#
# Usage: bench/nar-hash.sh [--quick]   (--quick: 256 MiB and 20k files, 1 round)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
bench_dir=${BENCH_DIR:-/var/tmp/armitage-bench}
rounds=${ROUNDS:-5}
large_mib=1024
small_files=100000
if [ "$quick" = 1 ]; then rounds=1; large_mib=256; small_files=20000; fi

cargo build --release -q -p armitage
armitage=$PWD/target/release/armitage
command -v nix-hash >/dev/null || { echo "nix-hash not found: run scripts/install-test-deps first" >&2; exit 1; }

large=$bench_dir/large-${large_mib}M
small=$bench_dir/small-${small_files}
mkdir -p "$bench_dir"
if [ ! -d "$large" ]; then
  echo "building $large (4 files of $((large_mib / 4)) MiB)..." >&2
  mkdir -p "$large.tmp"
  for i in 1 2 3 4; do
    head -c $((large_mib / 4))M /dev/urandom > "$large.tmp/blob$i"
  done
  chmod +x "$large.tmp/blob1"
  mv "$large.tmp" "$large"
fi
if [ ! -d "$small" ]; then
  echo "building $small ($small_files files)..." >&2
  python3 - "$small.tmp" "$small_files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 400), "e%02d" % (i % 17))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(rng.randbytes(rng.randrange(64, 4096)))
PY
  mv "$small.tmp" "$small"
fi

# Median wall time in seconds of a command over $rounds runs (one warm-up).
median() {
  local times=()
  bash -c "$1" >/dev/null
  for _ in $(seq "$rounds"); do
    local s e
    s=$(date +%s.%N)
    bash -c "$1" >/dev/null
    e=$(date +%s.%N)
    times+=("$(awk -v s="$s" -v e="$e" 'BEGIN {print e - s}')")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

ssl_kbs=$(openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | awk '/^sha256/ {print $2}' | tr -d k)
ssl_mbs=$(awk -v k="$ssl_kbs" 'BEGIN {print k * 1000 / 1048576}')

cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')
printf '\nNAR + SHA-256 throughput, %s, %s cores, %s GiB RAM, %s, %d round(s)\n' \
  "$cpu" "$(nproc)" "$(awk '/MemTotal/ {printf "%d", $2/1048576}' /proc/meminfo)" "$(date -u +%Y-%m-%d)" "$rounds"
printf 'openssl speed -evp sha256 (16 KiB blocks): %.0f MiB/s\n\n' "$ssl_mbs"
printf '%-22s %-28s %10s %10s %12s\n' tree tool seconds MiB/s "vs openssl"
for tree in "$large" "$small"; do
  nar_bytes=$("$armitage" nar dump "$tree" | wc -c)
  for tool in armitage nix-hash "nix-store|sha256sum"; do
    case $tool in
      armitage) cmd="'$armitage' hash path --type sha256 '$tree'" ;;
      nix-hash) cmd="nix-hash --type sha256 '$tree'" ;;
      *) cmd="nix-store --dump '$tree' | sha256sum" ;;
    esac
    t=$(median "$cmd")
    mbs=$(awk -v b="$nar_bytes" -v t="$t" 'BEGIN {print b / 1048576 / t}')
    printf '%-22s %-28s %10.3f %10.0f %11.0f%%\n' "$(basename "$tree")" "$tool" "$t" "$mbs" "$(awk -v m="$mbs" -v o="$ssl_mbs" 'BEGIN {print 100 * m / o}')"
  done
done
# The results must agree, or the comparison means nothing.
for tree in "$large" "$small"; do
  a=$("$armitage" hash path --type sha256 "$tree")
  b=$(nix-hash --type sha256 "$tree")
  [ "$a" = "$b" ] || { echo "hash mismatch on $tree: armitage $a, nix-hash $b" >&2; exit 1; }
done
