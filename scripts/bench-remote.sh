#!/usr/bin/env bash
# Benchmark shipping an archive to S3-compatible storage: lifeboat's upload path
# (crates/remote, the `ship` example: parts streamed from disk, sha256 as sent, the object read
# back) beside `rclone copyto` of the same file to the same bucket, on a one-node Garage on
# loopback started for the run. Prints each tool's wall time, throughput and peak RSS, the
# ratio, and the targets: lifeboat at least rclone's throughput, under 64 MiB of RSS. The file is
# random bytes, like a compressed archive. lifeboat encrypted (age) is measured too, for
# information. Exit code 0 whatever the targets say; 1 when something failed.
#
# Usage: scripts/bench-remote.sh        (after scripts/setup-test-env: garage, rclone)
#   SIZE_MB   the file's size in MiB (default 1024)
#   RUNS      rounds, interleaved; the best (lowest wall time) of each tool is reported (default 2)
#   GARAGE    the garage binary (default: garage on PATH, else ~/.cargo/bin/garage)
#   LIFEBOAT_BENCH_DIR  where the file and Garage's data go (default $TMPDIR or /tmp); needs
#                       about 3.2 times SIZE_MB free (the file, and Garage's copies of each run's
#                       object until it is deleted)
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean AWS and rclone environment: a shell may hold anything (AWS_CA_BUNDLE, AWS_PROFILE,
# AWS_ENDPOINT_URL, ...), and rclone's S3 backend fails on a custom CA bundle over plain http.
for v in $(env | grep -o '^\(AWS\|RCLONE\)_[A-Za-z0-9_]*'); do unset "$v"; done
export RCLONE_CONFIG=/dev/null

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-2}
GARAGE=${GARAGE:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
BASE=${LIFEBOAT_BENCH_DIR:-${TMPDIR:-/tmp}}

die() { echo "bench-remote: $*" >&2; exit 1; }
[ -x "$GARAGE" ] || die "no garage binary at $GARAGE: run scripts/setup-test-env"
command -v rclone >/dev/null || die "rclone is needed: run scripts/setup-test-env"
[ -x /usr/bin/time ] || die "/usr/bin/time is needed (Debian's time package) for peak RSS"

cargo build --release -q -p lifeboat-remote --example ship
SHIP=${CARGO_TARGET_DIR:-target}/release/examples/ship

WORK=$(mktemp -d "$BASE/lifeboat-bench-remote.XXXXXX")
GARAGE_PID=
cleanup() {
  [ -n "$GARAGE_PID" ] && kill "$GARAGE_PID" 2>/dev/null && wait "$GARAGE_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# Free loopback ports for RPC, S3 and admin.
read -r RPC_PORT S3_PORT ADMIN_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

mkdir -p "$WORK/meta" "$WORK/data"
cat > "$WORK/garage.toml" <<EOF
metadata_dir = "$WORK/meta"
data_dir = "$WORK/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
g() { "$GARAGE" -c "$WORK/garage.toml" "$@"; }

STARTED=$(date +%s.%N)
"$GARAGE" -c "$WORK/garage.toml" server > "$WORK/garage.log" 2>&1 &
GARAGE_PID=$!
for _ in $(seq 1 100); do g status > /dev/null 2>&1 && break; sleep 0.1; done
g status > /dev/null 2>&1 || { tail -20 "$WORK/garage.log" >&2; die "garage did not start"; }
NODE=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 10G "$NODE" > /dev/null
g layout apply --version 1 > /dev/null
KEY_ID="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
g key import --yes "$KEY_ID" "$SECRET" -n bench > /dev/null
g bucket create bench > /dev/null
g bucket allow --read --write --owner bench --key "$KEY_ID" > /dev/null
READY=$(date +%s.%N)
printf 'garage: one node ready in %.1f s\n' "$(echo "$READY - $STARTED" | bc -l)"

FILE="$WORK/archive.tar.gz"
echo "writing $SIZE_MB MiB of random bytes to $FILE" >&2
head -c "$((SIZE_MB << 20))" /dev/urandom > "$FILE"
cat "$FILE" > /dev/null # the page cache holds it for every tool alike

ENDPOINT="http://127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET
export LIFEBOAT_S3_ENDPOINT=$ENDPOINT LIFEBOAT_S3_REGION=garage
# rclone's remote "g", from the environment only (no config file is read or written).
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT=$ENDPOINT
export RCLONE_CONFIG_G_ACCESS_KEY_ID=$KEY_ID RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$SECRET
export RCLONE_CONFIG_G_REGION=garage RCLONE_CONFIG_G_FORCE_PATH_STYLE=true
RECIPIENT=$(age-keygen 2>/dev/null | sed -n 's/^# public key: //p' || true)

run() { # run NAME CMD...: sets NAME_S (wall seconds) and NAME_RSS (KiB)
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" > "$WORK/$name.out" 2>&1 \
    || { cat "$WORK/$name.out" >&2; die "$name failed"; }
  read -r w m < "$WORK/$name.time"
  printf -v "${name}_S" '%s' "$w"; printf -v "${name}_RSS" '%s' "$m"
}
best() { # best NAME: the round with the lowest wall time
  local name=$1 i w bw="" bi=1
  for i in $(seq 1 "$RUNS"); do
    eval "w=\${${name}_${i}_S}"
    if [ -z "$bw" ] || [ "$(echo "$w < $bw" | bc -l)" = 1 ]; then bw=$w; bi=$i; fi
  done
  eval "${name}_S=\${${name}_${bi}_S}; ${name}_RSS=\${${name}_${bi}_RSS}"
}

for i in $(seq 1 "$RUNS"); do
  run "LB_$i" "$SHIP" "$FILE" s3://bench "lifeboat-$i.tar.gz"
  run "RC_$i" rclone copyto "$FILE" "g:bench/rclone-$i.tar.gz"
  [ -n "$RECIPIENT" ] && run "LE_$i" "$SHIP" "$FILE" s3://bench "lifeboat-$i.tar.gz.age" "$RECIPIENT"
  rclone delete g:bench > /dev/null 2>&1 || true
done
best LB; best RC
[ -n "$RECIPIENT" ] && best LE

mbs() { echo "$SIZE_MB * 1.048576 / $1" | bc -l; }
printf '\n%s MiB to a one-node Garage on loopback, 2 cores, best of %s, load average now: %s\n' \
  "$SIZE_MB" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %8s %8s %12s\n' tool wall_s MB/s peak_RSS_KiB
printf '%-34s %8.2f %8.1f %12s\n' "lifeboat (8 MiB parts, 2 in flight)" "$LB_S" "$(mbs "$LB_S")" "$LB_RSS"
[ -n "$RECIPIENT" ] && printf '%-34s %8.2f %8.1f %12s\n' "lifeboat, age-encrypted" "$LE_S" "$(mbs "$LE_S")" "$LE_RSS"
printf '%-34s %8.2f %8.1f %12s\n' "rclone copyto ($(rclone version 2>/dev/null | head -1 | cut -d' ' -f2))" "$RC_S" "$(mbs "$RC_S")" "$RC_RSS"
RATIO=$(echo "$RC_S / $LB_S" | bc -l)
verdict() { [ "$1" = 1 ] && echo PASS || echo FAIL; }
printf '\nthroughput, lifeboat / rclone: %.2fx (target >= 1): %s\n' "$RATIO" "$(verdict "$(echo "$RATIO >= 1" | bc -l)")"
printf 'lifeboat peak RSS: %s KiB (target < 65536): %s\n' "$LB_RSS" "$(verdict "$(echo "$LB_RSS < 65536" | bc -l)")"
