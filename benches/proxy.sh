#!/usr/bin/env bash
# What keysim proxy adds, end to end, on loopback with the fake beside it (2 cores shared by
# the fake, the proxy and the client):
#   1. end-to-end p50 / p99 at 1,000 requests/s (Poisson, `keysim load --no-engine`), straight
#      to the fake and through the proxy; the same schedule and the same latency draws;
#   2. time to the first byte of a stream (`alt=sse`), straight and through, 300 requests;
#   3. the highest rate, closed loop (wrk, 64 connections), straight and through.
#   bash benches/proxy.sh [path/to/keysim] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYSIM=${1:-target/release/keysim}
ROUNDS=${2:-2}
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
FAKE_PORT=$((18500 + RANDOM % 500))
PROXY_PORT=$((19100 + RANDOM % 500))
FAKE=http://127.0.0.1:$FAKE_PORT
PROXY=http://127.0.0.1:$PROXY_PORT
"$KEYSIM" mock --scenario benches/proxy-rate.toml --port "$FAKE_PORT" >/dev/null &
sleep 0.5
"$KEYSIM" proxy --config benches/proxy-bench.toml --listen "127.0.0.1:$PROXY_PORT" --upstream "$FAKE" >/dev/null 2>"$DIR/proxy.log" &
sleep 1
export DIRECT_TOKEN=proj-1-key PROXY_TOKEN=bench-client-token-0001

e2e() { # target token-variable -> "p50 p99" in ms
  "$KEYSIM" load benches/proxy-rate.toml --target "$1" --no-engine --token-env "$2" --json --no-plots \
    --out "$DIR/load" | python3 -c 'import json,sys; l=json.load(sys.stdin)["load"]; e=l["end_to_end"]; print(e["p50"], e["p99"], l["late_sends"], l["started"])'
}
echo "== 1. end to end at 1,000 requests/s (ms: p50 p99, late starts, requests)"
for round in $(seq "$ROUNDS"); do
  echo "round $round  straight: $(e2e "$FAKE" DIRECT_TOKEN)   through the proxy: $(e2e "$PROXY" PROXY_TOKEN)"
done

ttfb() { # base token -> median and p99 time to first byte, ms
  for _ in $(seq 300); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' -X POST \
      "$1/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" \
      -H "x-goog-api-key: $2" -H 'content-type: application/json' \
      -H 'x-keysim-latency-ms: 20' -H 'x-keysim-output-tokens: 200' \
      -d '{"contents":[{"parts":[{"text":"a stream"}]}]}'
  done | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}'
}
echo "== 2. stream time to first byte (ms: p50 p99)"
for round in $(seq "$ROUNDS"); do
  echo "round $round  straight: $(ttfb "$FAKE" "$DIRECT_TOKEN")   through the proxy: $(ttfb "$PROXY" "$PROXY_TOKEN")"
done

LUA="$DIR/post.lua"
cat > "$LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-keysim-output-tokens"] = "64"
wrk.headers["x-keysim-latency-ms"] = "0"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"' .. string.rep("word ", 190) .. '"}]}]}'
wrk.path = "/v1beta/models/gemini-2.5-flash:generateContent"
LUA
echo "== 3. closed loop, 64 connections, 10 s (requests/s, latency)"
for round in $(seq "$ROUNDS"); do
  for spec in "straight $FAKE $DIRECT_TOKEN" "through $PROXY $PROXY_TOKEN"; do
    read -r name base token <<<"$spec"
    out=$(wrk -t1 -c64 -d10s -H "x-goog-api-key: $token" -s "$LUA" --latency "$base")
    echo "round $round  $name: $(echo "$out" | awk '/Requests\/sec/ {print $2 " req/s"} / 50%/ {print "p50 " $2} / 99%/ {print "p99 " $2} /Non-2xx/ {print "non-2xx " $4}' | tr '\n' ' ')"
  done
done
echo "== the proxy's own view"
curl -s "$PROXY/metrics" | grep -E '^keysim_(decision_seconds_(sum|count)|proxy_requests_total\{surface="gemini",outcome="(succeeded|denied|failed)"\}|breaches_total)'
