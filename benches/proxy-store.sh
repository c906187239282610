#!/usr/bin/env bash
# What the proxy adds, by store: open-loop Poisson traffic at 10, 50 and 1,000 requests/s
# (`keysim load --no-engine`), straight to the fake and through the proxy with its in-memory
# store and with Redis; the fake answers every request in a fixed 20 ms. The proxy is pinned
# to core 1, the fake and the load runner to core 0, so the proxy's cost is not lost in theirs.
# Every rate runs its three targets interleaved, `rounds` times; the same schedule and draws.
#   bash benches/proxy-store.sh [path/to/keysim] [rounds] [redis://host:port]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYSIM=${1:-target/release/keysim}
ROUNDS=${2:-2}
REDIS=${3:-${KEYSIM_REDIS_URL:-}}
if [ -z "$REDIS" ]; then echo "give a Redis URL (or set KEYSIM_REDIS_URL)"; exit 2; fi
source benches/proxy-common.sh
MEM_PORT=$((19100 + RANDOM % 400))
RED_PORT=$((MEM_PORT + 400))
taskset -c 1 "$KEYSIM" proxy --config benches/proxy-bench.toml --listen "127.0.0.1:$MEM_PORT" --upstream "$FAKE" \
  >/dev/null 2>"$DIR/memory.log" &
taskset -c 1 "$KEYSIM" proxy --config benches/proxy-bench.toml --listen "127.0.0.1:$RED_PORT" --upstream "$FAKE" \
  --store "$REDIS" >/dev/null 2>"$DIR/redis.log" &
sleep 1
export DIRECT_TOKEN=proj-1-key PROXY_TOKEN=bench-client-token-0001

printf '%-6s %-6s %-22s %-22s %-22s %s\n' rate round "straight p50 p99" "memory p50 p99" "redis p50 p99" \
  "adds (memory; redis) p50 / p99"
for spec in "10 60" "50 30" "1000 20"; do
  read -r rate secs <<<"$spec"
  for round in $(seq "$ROUNDS"); do
    read -r s50 s99 <<<"$(e2e "$rate" "$secs" "$FAKE" DIRECT_TOKEN)"
    read -r m50 m99 <<<"$(e2e "$rate" "$secs" "http://127.0.0.1:$MEM_PORT" PROXY_TOKEN)"
    read -r r50 r99 <<<"$(e2e "$rate" "$secs" "http://127.0.0.1:$RED_PORT" PROXY_TOKEN)"
    adds=$(python3 -c "print(f'+{$m50-$s50:.2f} / +{$m99-$s99:.2f}; +{$r50-$s50:.2f} / +{$r99-$s99:.2f}')")
    printf '%-6s %-6s %-22s %-22s %-22s %s\n' "$rate" "$round" "$s50 $s99" "$m50 $m99" "$r50 $r99" "$adds"
  done
done
echo "== the Redis proxy's own view"
curl -s "http://127.0.0.1:$RED_PORT/metrics" |
  grep -E '^keysim_(decision_seconds_(sum|count)|store_errors_total|proxy_requests_total\{surface="gemini",outcome="(succeeded|denied|failed)"\})'
