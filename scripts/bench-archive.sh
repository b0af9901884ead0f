#!/usr/bin/env bash
# Benchmark lifeboat's archive writer against GNU tar, pigz and gzip on two trees: a generated mixed
# tree, and a copy of /usr/lib/x86_64-linux-gnu made with `cp -a`, which keeps its hard links (GNU
# tar stores each linked file once; so must lifeboat, or its archive grows by every extra copy).
#
# Usage: scripts/bench-archive.sh
#   LIFEBOAT_BENCH_TREE  where the mixed tree is generated once and cached (default /tmp/lifeboat-bench-tree)
#   LIFEBOAT_BENCH_LINKS where the hard-link tree is copied once (default /tmp/lifeboat-bench-links)
#   LIFEBOAT_BENCH_OUT   scratch dir for the archives (default /tmp/lifeboat-bench-out)
#   LEVEL                gzip level (default 6); THREADS lifeboat threads (default 0 = one per core)
# All runs read a warm page cache (the tree is read once first), so they compare CPU work.
set -euo pipefail
cd "$(dirname "$0")/.."

TREE=${LIFEBOAT_BENCH_TREE:-/tmp/lifeboat-bench-tree}
LINKS=${LIFEBOAT_BENCH_LINKS:-/tmp/lifeboat-bench-links}
OUT=${LIFEBOAT_BENCH_OUT:-/tmp/lifeboat-bench-out}
LEVEL=${LEVEL:-6}
THREADS=${THREADS:-0}

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

[ -d "$TREE" ] || gen_tree
[ -d "$LINKS" ] || gen_links
mkdir -p "$OUT"
size_of() { stat -c %s "$1"; }
now() { date +%s.%N; }

cargo build --release -q -p lifeboat-archive --example bench
BENCH=${CARGO_TARGET_DIR:-target}/release/examples/bench

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

bench_tree() { # bench_tree TREE: runs every tool on TREE and prints the figures
  local T=$1
  echo "warming the page cache for $T" >&2
  tar -cf - -C "$T" . > /dev/null
  # du counts a hard-linked file once, as the archives store it.
  CONTENT=$(du -sb --apparent-size "$T" | cut -f1)
  LINKED=$(find "$T" -type f -links +1 | wc -l)

  rm -f "$OUT/lifeboat.tar.gz"
  run LB "$BENCH" "$T" "$OUT/lifeboat.tar.gz" "$LEVEL" "$THREADS" > "$OUT/lifeboat.out"
  LB_Z=$(size_of "$OUT/lifeboat.tar.gz")
  gzip -t "$OUT/lifeboat.tar.gz"
  LB_HWM=$(sed -n 's/.*vmhwm_kib=\([0-9]*\).*/\1/p' "$OUT/lifeboat.out")
  run GT tar -czf "$OUT/gnutar.tar.gz" -C "$T" .
  GT_Z=$(size_of "$OUT/gnutar.tar.gz")
  run PZ sh -c "tar -cf - -C '$T' . | pigz -p 2 -$LEVEL > '$OUT/pigz.tar.gz'"
  PZ_Z=$(size_of "$OUT/pigz.tar.gz")
  run GZ sh -c "tar -cf - -C '$T' . | gzip -$LEVEL > '$OUT/gzip.tar.gz'"
  GZ_Z=$(size_of "$OUT/gzip.tar.gz")

  mb() { echo "scale=1; $CONTENT / 1000000 / $1" | bc -l; }
  printf '\ntree: %s, %s MB of content, %s names of multi-link files, level %s, %s cores, load average now: %s\n' \
    "$T" "$((CONTENT / 1000000))" "$LINKED" "$LEVEL" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-28s %8s %8s %8s %12s\n' tool wall_s MB/s cpu_s output_bytes
  printf '%-28s %8.2f %8s %8s %12s\n' "lifeboat (threads=$THREADS)" "$LB_S" "$(mb "$LB_S")" "$LB_CPU" "$LB_Z"
  printf '%-28s %8.2f %8s %8s %12s\n' "GNU tar -czf" "$GT_S" "$(mb "$GT_S")" "$GT_CPU" "$GT_Z"
  printf '%-28s %8.2f %8s %8s %12s\n' "tar | pigz -p 2 -$LEVEL" "$PZ_S" "$(mb "$PZ_S")" "$PZ_CPU" "$PZ_Z"
  printf '%-28s %8.2f %8s %8s %12s\n' "tar | gzip -$LEVEL" "$GZ_S" "$(mb "$GZ_S")" "$GZ_CPU" "$GZ_Z"
  printf '\nspeed vs GNU tar -czf: %.2fx wall (target >= 3)\n' "$(echo "$GT_S / $LB_S" | bc -l)"
  printf 'speed vs pigz -p 2:    %.2fx wall (target >= 1.5), %.2fx in CPU seconds\n' \
    "$(echo "$PZ_S / $LB_S" | bc -l)" "$(echo "$PZ_CPU / $LB_CPU" | bc -l)"
  printf 'size vs gzip -%s:       %+.2f%% (target <= +3%%)\n' "$LEVEL" "$(echo "($LB_Z - $GZ_Z) * 100 / $GZ_Z" | bc -l)"
  printf 'size vs tar -czf:      %.3fx (target <= 1.03)\n' "$(echo "$LB_Z / $GT_Z" | bc -l)"
  printf 'lifeboat peak RSS:     %s KiB by time(1), VmHWM %s KiB (target < 65536)\n' "$LB_RSS" "$LB_HWM"
  printf 'lifeboat cores used:   %.2f of %s (cpu_s / wall_s)\n' "$(echo "$LB_CPU / $LB_S" | bc -l)" "$(nproc)"
}

bench_tree "$TREE"
bench_tree "$LINKS"
