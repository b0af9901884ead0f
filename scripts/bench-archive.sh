#!/usr/bin/env bash
# Benchmark lifeboat's archive writer, gzip and zstd, against GNU tar, pigz, gzip and zstd on three
# trees: a generated mixed tree; a copy of /usr/lib/x86_64-linux-gnu made with `cp -a`, which keeps
# its hard links (GNU tar stores each linked file once; so must lifeboat, or its archive grows by
# every extra copy); and 100,000 generated files of 512 to 4096 bytes (about 395 MB on disk).
#
# Usage: scripts/bench-archive.sh
#   LIFEBOAT_BENCH_TREE  where the mixed tree is generated once and cached (default /tmp/lifeboat-bench-tree)
#   LIFEBOAT_BENCH_LINKS where the hard-link tree is copied once (default /tmp/lifeboat-bench-links)
#   LIFEBOAT_BENCH_SMALL where the small-files tree is generated once (default /tmp/lifeboat-bench-small)
#   LIFEBOAT_BENCH_OUT   scratch dir for the archives (default /tmp/lifeboat-bench-out)
#   TREES                which trees, of: mixed links small (default all three)
#   LEVEL                gzip level (default 6); ZLEVEL zstd level (default 3)
#   THREADS              lifeboat threads (default 0 = one per core); RUNS rounds (default 2)
# All runs read a warm page cache (the tree is read once first), so they compare CPU work. Every
# tool's output is made durable as lifeboat's is (lifeboat fsyncs its archive before it renames
# it; the others are followed by `sync FILE`, which fsyncs that file), so no tool is timed
# without the write reaching the disk. The
# machine may be shared: lifeboat and the parallel tools it is measured against run side by side,
# interleaved, RUNS rounds, and the best (lowest wall time) of each is reported, with its CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."

TREE=${LIFEBOAT_BENCH_TREE:-/tmp/lifeboat-bench-tree}
LINKS=${LIFEBOAT_BENCH_LINKS:-/tmp/lifeboat-bench-links}
SMALL=${LIFEBOAT_BENCH_SMALL:-/tmp/lifeboat-bench-small}
TREES=${TREES:-mixed links small}
OUT=${LIFEBOAT_BENCH_OUT:-/tmp/lifeboat-bench-out}
LEVEL=${LEVEL:-6}
ZLEVEL=${ZLEVEL:-3}
THREADS=${THREADS:-0}
RUNS=${RUNS:-2}

gen_tree() {
  echo "generating the bench tree in $TREE (once)" >&2
  rm -rf "$TREE.tmp" && mkdir -p "$TREE.tmp"/{text,bin,compressed,random,small}
  # Text: headers and documentation (many small files; /usr/share/doc also holds .gz files).
  cp -a /usr/include "$TREE.tmp/text/include"
  cp -a /usr/share/doc "$TREE.tmp/text/doc"
  # Binary, ELF-like: shared libraries and Rust libraries, as regular files, about 200 MB.
  local total=0 f
  while IFS= read -r f; do
    cp "$f" "$TREE.tmp/bin/" || continue
    total=$((total + $(stat -c %s "$f")))
    [ "$total" -gt 200000000 ] && break
  done < <({ find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' -size +100k;
             find "${HOME}/.rustup/toolchains" -name '*.so' -size +1M 2>/dev/null; } | sort -u)
  # Already compressed.
  find /usr/share -name '*.gz' -type f 2>/dev/null | head -3000 | tr '\n' '\0' \
    | xargs -0 -r cat > "$TREE.tmp/compressed/all-gz.bin" || true
  # Incompressible.
  head -c 40000000 /dev/urandom > "$TREE.tmp/random/random.bin"
  # Many small generated files (log-like lines).
  for d in $(seq 0 19); do
    mkdir -p "$TREE.tmp/small/$d"
    for f in $(seq 0 499); do
      printf 'ts=%d level=info svc=app%d msg="request served" id=%d-%d\n' $((1700000000 + f)) "$d" "$d" "$f" \
        > "$TREE.tmp/small/$d/f$f.log"
    done
  done
  mv "$TREE.tmp" "$TREE"
}

gen_links() {
  echo "copying /usr/lib/x86_64-linux-gnu to $LINKS (once; cp -a keeps hard links)" >&2
  rm -rf "$LINKS.tmp" && cp -a /usr/lib/x86_64-linux-gnu "$LINKS.tmp" && mv "$LINKS.tmp" "$LINKS"
}

gen_small() {
  echo "generating 100000 small files in $SMALL (once)" >&2
  rm -rf "$SMALL.tmp" && "$BENCH" --small-tree "$SMALL.tmp" 100000 && mv "$SMALL.tmp" "$SMALL"
}

mkdir -p "$OUT"
size_of() { stat -c %s "$1"; }
now() { date +%s.%N; }

cargo build --release -q -p lifeboat-archive --example bench
BENCH=${CARGO_TARGET_DIR:-target}/release/examples/bench
for t in $TREES; do
  case $t in
    mixed) [ -d "$TREE" ] || gen_tree ;;
    links) [ -d "$LINKS" ] || gen_links ;;
    small) [ -d "$SMALL" ] || gen_small ;;
    *) echo "unknown tree $t: use mixed, links or small" >&2; exit 2 ;;
  esac
done

# Every run goes through /usr/bin/time when present: wall seconds, CPU seconds (user+sys, all
# processes of the pipeline) and peak RSS. CPU seconds matter on a shared machine: wall time there
# depends on what else runs, CPU time much less.
run() { # run NAME CMD...: sets ${NAME}_S (wall), ${NAME}_CPU, ${NAME}_RSS
  local name=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%e %U %S %M' -o "$OUT/$name.time" "$@"
    read -r w u s m < "$OUT/$name.time"
    printf -v "${name}_S" '%s' "$w"
    printf -v "${name}_CPU" '%s' "$(echo "$u + $s" | bc -l)"
    printf -v "${name}_RSS" '%s' "$m"
  else
    local t0 t1; t0=$(now); "$@"; t1=$(now)
    printf -v "${name}_S" '%s' "$(echo "$t1 - $t0" | bc -l)"
    printf -v "${name}_CPU" '%s' "?"; printf -v "${name}_RSS" '%s' "?"
  fi
}

# best NAME: after run NAME_i for each round i, keeps the round with the lowest wall time as NAME.
best() {
  local name=$1 i w bw="" bi=1
  for i in $(seq 1 "$RUNS"); do
    eval "w=\${${name}_${i}_S}"
    if [ -z "$bw" ] || [ "$(echo "$w < $bw" | bc -l)" = 1 ]; then bw=$w; bi=$i; fi
  done
  eval "${name}_S=\${${name}_${bi}_S}; ${name}_CPU=\${${name}_${bi}_CPU}; ${name}_RSS=\${${name}_${bi}_RSS}"
}

bench_tree() { # bench_tree TREE: runs every tool on TREE and prints the figures
  local T=$1 i
  echo "warming the page cache for $T" >&2
  tar -cf - -C "$T" . > /dev/null
  # du counts a hard-linked file once, as the archives store it.
  CONTENT=$(du -sb --apparent-size "$T" | cut -f1)
  FILES=$(find "$T" -type f | wc -l)
  LINKED=$(find "$T" -type f -links +1 | wc -l)

  # The parallel tools side by side, interleaved, RUNS rounds.
  for i in $(seq 1 "$RUNS"); do
    rm -f "$OUT/lifeboat.tar.gz" "$OUT/lifeboat.tar.zst"
    run "LB_$i" "$BENCH" "$T" "$OUT/lifeboat.tar.gz" "$LEVEL" "$THREADS" gzip > "$OUT/lifeboat.out"
    run "PZ_$i" sh -c "tar -cf - -C '$T' . | pigz -p 2 -$LEVEL > '$OUT/pigz.tar.gz' && sync '$OUT/pigz.tar.gz'"
    run "LZ_$i" "$BENCH" "$T" "$OUT/lifeboat.tar.zst" "$ZLEVEL" "$THREADS" zstd > "$OUT/lifeboat-zstd.out"
    run "ZS_$i" sh -c "tar -cf - -C '$T' . | zstd -q -T2 -$ZLEVEL > '$OUT/zstd.tar.zst' && sync '$OUT/zstd.tar.zst'"
  done
  best LB; best PZ; best LZ; best ZS
  LB_Z=$(size_of "$OUT/lifeboat.tar.gz")
  gzip -t "$OUT/lifeboat.tar.gz"
  LB_HWM=$(sed -n 's/.*vmhwm_kib=\([0-9]*\).*/\1/p' "$OUT/lifeboat.out")
  PZ_Z=$(size_of "$OUT/pigz.tar.gz")
  LZ_Z=$(size_of "$OUT/lifeboat.tar.zst")
  zstd -tq "$OUT/lifeboat.tar.zst"
  LZ_HWM=$(sed -n 's/.*vmhwm_kib=\([0-9]*\).*/\1/p' "$OUT/lifeboat-zstd.out")
  ZS_Z=$(size_of "$OUT/zstd.tar.zst")
  # The single-threaded references, once.
  run GT sh -c "tar -czf '$OUT/gnutar.tar.gz' -C '$T' . && sync '$OUT/gnutar.tar.gz'"
  GT_Z=$(size_of "$OUT/gnutar.tar.gz")
  run GZ sh -c "tar -cf - -C '$T' . | gzip -$LEVEL > '$OUT/gzip.tar.gz' && sync '$OUT/gzip.tar.gz'"
  GZ_Z=$(size_of "$OUT/gzip.tar.gz")

  mb() { echo "scale=1; $CONTENT / 1000000 / $1" | bc -l; }
  ratio() { echo "$1 / $2" | bc -l; }
  printf '\ntree: %s, %s MB of content in %s files, %s names of multi-link files, gzip level %s, zstd level %s, %s cores, best of %s, load average now: %s\n' \
    "$T" "$((CONTENT / 1000000))" "$FILES" "$LINKED" "$LEVEL" "$ZLEVEL" "$(nproc)" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-30s %8s %8s %8s %12s\n' tool wall_s MB/s cpu_s output_bytes
  printf '%-30s %8.2f %8s %8s %12s\n' "lifeboat gzip (threads=$THREADS)" "$LB_S" "$(mb "$LB_S")" "$LB_CPU" "$LB_Z"
  printf '%-30s %8.2f %8s %8s %12s\n' "tar | pigz -p 2 -$LEVEL" "$PZ_S" "$(mb "$PZ_S")" "$PZ_CPU" "$PZ_Z"
  printf '%-30s %8.2f %8s %8s %12s\n' "lifeboat zstd (threads=$THREADS)" "$LZ_S" "$(mb "$LZ_S")" "$LZ_CPU" "$LZ_Z"
  printf '%-30s %8.2f %8s %8s %12s\n' "tar | zstd -T2 -$ZLEVEL" "$ZS_S" "$(mb "$ZS_S")" "$ZS_CPU" "$ZS_Z"
  printf '%-30s %8.2f %8s %8s %12s\n' "GNU tar -czf" "$GT_S" "$(mb "$GT_S")" "$GT_CPU" "$GT_Z"
  printf '%-30s %8.2f %8s %8s %12s\n' "tar | gzip -$LEVEL" "$GZ_S" "$(mb "$GZ_S")" "$GZ_CPU" "$GZ_Z"
  printf '\ngzip: speed vs GNU tar -czf: %.2fx wall (target >= 3)\n' "$(ratio "$GT_S" "$LB_S")"
  printf 'gzip: speed vs pigz -p 2:    %.2fx wall (target >= 1.5), %.2fx in CPU seconds\n' \
    "$(ratio "$PZ_S" "$LB_S")" "$(ratio "$PZ_CPU" "$LB_CPU")"
  printf 'gzip: size vs gzip -%s:       %+.2f%% (target <= +3%%)\n' "$LEVEL" "$(echo "($LB_Z - $GZ_Z) * 100 / $GZ_Z" | bc -l)"
  printf 'gzip: size vs tar -czf:      %.3fx (target <= 1.03)\n' "$(ratio "$LB_Z" "$GT_Z")"
  printf 'zstd: speed vs zstd -T2 -%s:  %.2fx wall (target >= 1), %.2fx in CPU seconds\n' \
    "$ZLEVEL" "$(ratio "$ZS_S" "$LZ_S")" "$(ratio "$ZS_CPU" "$LZ_CPU")"
  printf 'zstd: size vs zstd -T2 -%s:   %.3fx (target <= 1)\n' "$ZLEVEL" "$(ratio "$LZ_Z" "$ZS_Z")"
  printf 'zstd vs gzip (lifeboat):     %.2fx faster wall, %.2fx less CPU, %.3fx the size\n' \
    "$(ratio "$LB_S" "$LZ_S")" "$(ratio "$LB_CPU" "$LZ_CPU")" "$(ratio "$LZ_Z" "$LB_Z")"
  printf 'lifeboat peak RSS:           gzip %s KiB, zstd %s KiB by time(1); VmHWM %s / %s KiB (target < 65536)\n' \
    "$LB_RSS" "$LZ_RSS" "$LB_HWM" "$LZ_HWM"
  printf 'lifeboat cores used:         gzip %.2f, zstd %.2f of %s (cpu_s / wall_s)\n' \
    "$(ratio "$LB_CPU" "$LB_S")" "$(ratio "$LZ_CPU" "$LZ_S")" "$(nproc)"
}

for t in $TREES; do
  case $t in
    mixed) bench_tree "$TREE" ;;
    links) bench_tree "$LINKS" ;;
    small) bench_tree "$SMALL" ;;
  esac
done
