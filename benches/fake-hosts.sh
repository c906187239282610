#!/usr/bin/env bash
# Measures the fake's two hosts on loopback with wrk (Debian package `wrk`): requests per
# second, and peak RSS after about 100k and 1M requests of ~1 KiB each.
#   bash benches/fake-hosts.sh [path/to/keysim]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYSIM=${1:-target/release/keysim}
LUA=$(mktemp --suffix=.lua)
trap 'rm -f "$LUA"' EXIT
cat > "$LUA" <<'LUA'
wrk.method = "POST"
wrk.path = "/v1beta/models/gemini-2.5-flash:generateContent"
wrk.headers["x-goog-api-key"] = "fake-bench-key"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-keysim-output-tokens"] = "64"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"' .. string.rep("word ", 190) .. '"}]}]}'
LUA
rss() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$1/status"; }
for spec in sustained:3:24 wiremock:4:55; do
  IFS=: read -r host first second <<<"$spec"
  port=$((18400 + RANDOM % 1000))
  "$KEYSIM" mock --host "$host" --port "$port" --scenario benches/fake-pool.toml >/dev/null &
  pid=$!
  sleep 1
  echo "== $host host"
  echo "start RSS $(rss $pid)"
  # About 100k requests, then about 900k more (wrk runs for a time, not a count).
  out=$(wrk -t1 -c32 -d"${first}s" -s "$LUA" "http://127.0.0.1:$port")
  echo "$out" | grep -E "Requests/sec|requests in"
  echo "RSS after the first run $(rss $pid)"
  out=$(wrk -t1 -c32 -d"${second}s" -s "$LUA" "http://127.0.0.1:$port")
  echo "$out" | grep -E "Requests/sec|requests in"
  echo "RSS after both runs $(rss $pid)"
  kill -INT $pid; wait $pid 2>/dev/null || true
done
