#!/usr/bin/env bash
# Load test over loopback with wrk: the gateway's cache-hit path against the simulator answering
# the same request directly (the "origin"), measured in the same run. Quote the ratio, not the
# absolute numbers: the machines are shared and noisy.
#
#   bash benches/load.sh [seconds] [connections]
#
# Needs wrk (installed from Debian if missing) and a release build (made if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
gw_port=18080; admin_port=19090

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
bin=target/release/zoho-gateway

log=$(mktemp)
ZOHO_GATEWAY_SERVER__LISTEN=127.0.0.1:$gw_port ZOHO_GATEWAY_SERVER__ADMIN_LISTEN=127.0.0.1:$admin_port \
  RUST_LOG=warn "$bin" demo >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
sim=$(grep -o 'simulator   http://[0-9.:]*' "$log" | awk '{print $2}')
filters='%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D'
path="/crm/v7/settings/user_groups/actions/associated_users_count?filters=$filters"
# Prime the cache; fetch a token for the direct run.
curl -fs "http://127.0.0.1:$gw_port$path" -H 'X-Gateway-Key: demo-gateway-key' >/dev/null
token=$(curl -fs -X POST "$sim/oauth/v2/token" \
  -d 'grant_type=refresh_token&client_id=1000.DEMOCLIENT0000000000000000000000&client_secret=demo-client-secret&refresh_token=1000.demo.refresh-token' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# The simulator's per-token concurrency limit is 10 (Zoho's Standard edition): stay under it.
run() { wrk -t2 -c"$2" -d"${secs}s" -H "$3" "$1" | awk '/Requests\/sec/ {print $2} /Latency/ {print $2 " " $3 " " $4}'; }
echo "== gateway cache hit ($conns connections, ${secs}s)"
hit=$(run "http://127.0.0.1:$gw_port$path" "$conns" 'X-Gateway-Key: demo-gateway-key')
echo "$hit"
echo "== simulator direct, same request (8 connections, ${secs}s)"
direct=$(run "$sim$path" 8 "Authorization: Zoho-oauthtoken $token")
echo "$direct"
hit_rps=$(echo "$hit" | tail -1); direct_rps=$(echo "$direct" | tail -1)
python3 -c "print(f'gateway hit / simulator direct throughput: {float(\"$hit_rps\")/float(\"$direct_rps\"):.2f}x')"
curl -fs "$sim/__simulator/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("count-route calls the simulator saw in all (gateway priming + direct run):", s["calls"]["associated_users_count"])' 
