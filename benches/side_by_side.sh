#!/usr/bin/env bash
# Side-by-side load harness (issue 14): the gateway's cache hit against a bare hyper server
# answering the same bytes from memory, measured in the same run, interleaved.
#
#   bash benches/side_by_side.sh                 # 5 rounds x 5 s, at 1 and 64 connections
#   ROUNDS=7 SECS=4 CONNS="64" bash benches/side_by_side.sh
#
# Targets, all on loopback, all with access logs off, all answering the seed's count query:
#   ref     examples/reference_server (benches/side_by_side/reference_server.rs): hyper 1, the
#           gateway's hit response (same headers, same body) from memory
#   ref2    a second, identical copy of ref: the A/A control (its ratio to ref is the noise)
#   nginx   nginx proxy_cache + proxy_cache_lock in front of the simulator (Zoho's no-store and
#           Set-Cookie ignored, so it caches like the gateway does)
#   gw      the gateway (`zoho-gateway serve`) in front of the simulator, every request a hit
# Each is warmed, then rounds run ref ref2 nginx gw ref ref2 nginx gw ... with wrk (-t1) at each
# connection count. Per target and round: req/s, p50, p99 (wrk --latency) and server CPU per
# request (utime+stime of the server's processes from /proc/PID/stat, before and after the run).
# The summary pairs each target with ref in the same round: median and min-max of the ratios.
# Quote ratios, not absolute numbers: the machine is shared.
#
# BASE_GATEWAY=/path/to/an/older/zoho-gateway adds target gw0: that binary, configured the same,
# interleaved with the others (before/after comparisons of a change, paired by round).
# Environment: ROUNDS (5), SECS (5), CONNS ("1 64"), WARM_SECS (2), BASE_PORT (18200),
# LIMIT_SECS (1200, the bound on the whole run, build included), GATEWAY_BIN and REFERENCE_BIN
# (prebuilt binaries: no build),
# PROFILE=1 to also record `perf record -g` of the gateway during one extra 64-connection run
# (written to $OUT/gw.perf.data; read with `perf report -i ...`), OUT (a temp dir, kept).
# Needs wrk and nginx (installed from Debian when missing; perf from linux-perf for PROFILE=1).
# The whole run is bounded by `timeout`; everything started is killed by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SIDE_BY_SIDE_BOUNDED:-}" ]; then # the whole run under one time limit
  export SIDE_BY_SIDE_BOUNDED=1
  exec timeout "${LIMIT_SECS:-1200}" bash "$0" "$@"
fi
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
CONNS=${CONNS:-"1 64"}
WARM_SECS=${WARM_SECS:-2}
BASE_PORT=${BASE_PORT:-18200}
OUT=${OUT:-$(mktemp -d /tmp/side_by_side.XXXXXX)}
mkdir -p "$OUT"
sim_port=$BASE_PORT
gw_port=$((BASE_PORT + 1))
admin_port=$((BASE_PORT + 2))
ref_port=$((BASE_PORT + 3))
ref2_port=$((BASE_PORT + 4))
nginx_port=$((BASE_PORT + 5))

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
if [ "${PROFILE:-0}" = 1 ]; then need perf linux-perf; fi

gateway=${GATEWAY_BIN:-target/release/zoho-gateway}
reference=${REFERENCE_BIN:-target/release/examples/reference_server}
if [ -z "${GATEWAY_BIN:-}${REFERENCE_BIN:-}" ]; then
  echo "== building (release)"
  cargo build --release --quiet --bin zoho-gateway --example reference_server
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url [header]
  for _ in $(seq 100); do
    curl -fs -o /dev/null ${2:+-H "$2"} "$1" && return 0
    sleep 0.1
  done
  echo "not answering: $1" >&2
  return 1
}

path="/crm/v7/settings/user_groups/actions/associated_users_count?filters=%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D"
key_header='X-Gateway-Key: bench-key'

echo "== simulator"
RUST_LOG=warn "$gateway" simulate --listen "127.0.0.1:$sim_port" >"$OUT/sim.log" 2>&1 &
pids+=($!)
sim="http://127.0.0.1:$sim_port"
wait_http "$sim/__simulator/stats"
read -r client_id client_secret refresh_token < <(awk '/client_id|client_secret|refresh_token/ {printf "%s ", $2} END {print ""}' "$OUT/sim.log")

echo "== gateway"
cat >"$OUT/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$admin_port"
[logging]
filter = "warn"
[routes.associated_users_count]
ttl = "1h"
[tenants.bench]
api_base = "$sim"
accounts_url = "$sim"
client_id = "$client_id"
client_secret = "$client_secret"
refresh_token = "$refresh_token"
[clients.bench]
tenant = "bench"
key = "bench-key"
EOF
RUST_LOG=warn "$gateway" serve --config "$OUT/gateway.toml" >"$OUT/gw.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
wait_http "http://127.0.0.1:$admin_port/readyz"
curl -fs -o /dev/null -H "$key_header" "http://127.0.0.1:$gw_port$path"
if [ -n "${BASE_GATEWAY:-}" ]; then
  gw0_port=$((BASE_PORT + 6))
  sed -e "s/:$gw_port\"/:$gw0_port\"/" -e "s/:$admin_port\"/:$((BASE_PORT + 7))\"/" \
    "$OUT/gateway.toml" >"$OUT/gateway0.toml"
  RUST_LOG=warn "$BASE_GATEWAY" serve --config "$OUT/gateway0.toml" >"$OUT/gw0.log" 2>&1 &
  gw0_pid=$!
  pids+=($gw0_pid)
  wait_http "http://127.0.0.1:$((BASE_PORT + 7))/readyz"
  curl -fs -o /dev/null -H "$key_header" "http://127.0.0.1:$gw0_port$path"
fi
curl -fs -D "$OUT/hit.head" -o "$OUT/hit.body" -H "$key_header" "http://127.0.0.1:$gw_port$path"
grep -qi '^cache-status: zoho-gateway; hit' "$OUT/hit.head" || {
  echo "the gateway's second answer is not a hit:" >&2
  cat "$OUT/hit.head" >&2
  exit 1
}

echo "== reference servers (the gateway's hit response, from memory)"
"$reference" "127.0.0.1:$ref_port" "$OUT/hit.body" "$OUT/hit.head" >"$OUT/ref.log" 2>&1 &
ref_pid=$!
pids+=($ref_pid)
"$reference" "127.0.0.1:$ref2_port" "$OUT/hit.body" "$OUT/hit.head" >"$OUT/ref2.log" 2>&1 &
ref2_pid=$!
pids+=($ref2_pid)
wait_http "http://127.0.0.1:$ref_port/"
wait_http "http://127.0.0.1:$ref2_port/"

echo "== nginx (proxy_cache + proxy_cache_lock in front of the simulator)"
token=$(curl -fs -X POST "$sim/oauth/v2/token" \
  -d "grant_type=refresh_token&client_id=$client_id&client_secret=$client_secret&refresh_token=$refresh_token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
mkdir -p "$OUT/nginx/cache" "$OUT/nginx/tmp"
cat >"$OUT/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
  uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
  scgi_temp_path $OUT/nginx/tmp/scgi;
  keepalive_requests 1000000;
  proxy_cache_path $OUT/nginx/cache levels=1:2 keys_zone=zoho:10m max_size=256m inactive=1h;
  upstream simulator { server 127.0.0.1:$sim_port; keepalive 16; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://simulator;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Zoho-oauthtoken $token";
      proxy_set_header X-Gateway-Key "";
      proxy_cache zoho;
      proxy_cache_lock on;
      proxy_cache_valid 200 204 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      proxy_hide_header Set-Cookie;
      proxy_hide_header X-ACCESSTOKEN-RESET;
      add_header Cache-Status "nginx; \$upstream_cache_status";
    }
  }
}
EOF
nginx -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" &
nginx_pid=$!
pids+=($nginx_pid)
wait_http "http://127.0.0.1:$nginx_port$path"
curl -fs -D "$OUT/nginx.head" -o /dev/null "http://127.0.0.1:$nginx_port$path"
grep -qi 'cache-status: nginx; HIT' "$OUT/nginx.head" || {
  echo "nginx's second answer is not a hit:" >&2
  cat "$OUT/nginx.head" >&2
  exit 1
}

declare -A url=(
  [ref]="http://127.0.0.1:$ref_port$path"
  [ref2]="http://127.0.0.1:$ref2_port$path"
  [nginx]="http://127.0.0.1:$nginx_port$path"
  [gw]="http://127.0.0.1:$gw_port$path"
)
targets=(ref ref2 nginx gw)
if [ -n "${BASE_GATEWAY:-}" ]; then
  url[gw0]="http://127.0.0.1:$gw0_port$path"
  targets+=(gw0)
fi

# The server's processes: the PID and its children (nginx's workers).
server_pids() { echo "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); }
declare -A root=([ref]=$ref_pid [ref2]=$ref2_pid [nginx]=$nginx_pid [gw]=$gw_pid [gw0]=${gw0_pid:-0})
cpu_ticks() { # utime + stime, clock ticks, over the target's processes
  local sum=0 p f
  for p in $(server_pids "${root[$1]}"); do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
    sum=$((sum + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$sum"
}

results="$OUT/results.tsv"
echo -e "conns\tround\ttarget\trps\tp50\tp99\tcpu_ticks\trequests" >"$results"
run_one() { # target conns round
  local t=$1 c=$2 r=$3 before after out
  before=$(cpu_ticks "$t")
  out=$(wrk -t1 -c"$c" -d"${SECS}s" --latency -H "$key_header" "${url[$t]}")
  after=$(cpu_ticks "$t")
  if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
    echo "$t: errors during the run:" >&2
    echo "$out" >&2
  fi
  echo "$out" | awk -v c="$c" -v r="$r" -v t="$t" -v cpu=$((after - before)) '
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /requests in/ {n=$1}
    /^Requests\/sec/ {rps=$2}
    END {printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c, r, t, rps, p50, p99, cpu, n}' >>"$results"
}

echo "== warming (${WARM_SECS}s each at 64 connections)"
for t in "${targets[@]}"; do
  wrk -t1 -c64 -d"${WARM_SECS}s" -H "$key_header" "${url[$t]}" >/dev/null
done

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CONNS; do
  for r in $(seq "$ROUNDS"); do
    for t in "${targets[@]}"; do
      run_one "$t" "$c" "$r"
    done
    echo "   $c conns, round $r done"
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

stats=$(curl -fs "$sim/__simulator/stats")
python3 benches/side_by_side/summarise.py "$results" "$(getconf CLK_TCK)" "$stats"

if [ "${PROFILE:-0}" = 1 ]; then
  echo "== perf record -g of the gateway, 64 connections, ${SECS}s"
  wrk -t1 -c64 -d"$((SECS + 2))s" -H "$key_header" "${url[gw]}" >/dev/null &
  wrk_pid=$!
  pids+=($wrk_pid)
  sleep 1
  perf record -g -F 999 -p "$gw_pid" -o "$OUT/gw.perf.data" -- sleep "$SECS" 2>/dev/null
  wait "$wrk_pid" || true
  echo "   perf report --no-children -i $OUT/gw.perf.data"
fi
echo "== raw results and logs in $OUT"
