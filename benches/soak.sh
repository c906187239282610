#!/usr/bin/env bash
# Soak: the proxy's memory and descriptors over a long run. 1,000,000 requests at 1,000/s
# through the proxy (`keysim load --no-engine`, which keeps a fixed set of connections), then
# ten minutes of clients that connect, ask once and leave (some without reading the answer),
# then a quiet minute. The proxy's RSS and open descriptors are sampled every 10 s into a CSV.
#   bash benches/soak.sh [path/to/keysim] [requests] [churn-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYSIM=${1:-target/release/keysim}
REQUESTS=${2:-1000000}
CHURN=${3:-600}
OUT=${SOAK_OUT:-target/soak}
mkdir -p "$OUT"
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
FAKE_PORT=$((18500 + RANDOM % 500))
PROXY_PORT=$((19100 + RANDOM % 500))
"$KEYSIM" mock --scenario benches/proxy-rate.toml --port "$FAKE_PORT" >/dev/null &
sleep 0.5
"$KEYSIM" proxy --config benches/proxy-bench.toml --listen "127.0.0.1:$PROXY_PORT" \
  --upstream "http://127.0.0.1:$FAKE_PORT" >/dev/null 2>"$DIR/proxy.log" &
PROXY_PID=$!
sleep 1
sample() { # phase -> one CSV row: seconds since start, phase, RSS kB, open descriptors
  local rss fds
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status")
  fds=$(ls "/proc/$PROXY_PID/fd" | wc -l)
  echo "$(( $(date +%s) - START )),$1,$rss,$fds"
}
START=$(date +%s)
echo "seconds,phase,rss_kb,fds" >"$OUT/soak.csv"
sample baseline >>"$OUT/soak.csv"
( while kill -0 "$PROXY_PID" 2>/dev/null; do sleep 10; sample "$(cat "$DIR/phase" 2>/dev/null || echo load)" >>"$OUT/soak.csv"; done ) &
echo load >"$DIR/phase"
export PROXY_TOKEN=bench-client-token-0001
SECS=$((REQUESTS / 1000))
"$KEYSIM" load benches/proxy-rate.toml --target "http://127.0.0.1:$PROXY_PORT" --no-engine --token-env PROXY_TOKEN \
  --json --no-plots --set "scenario.duration=${SECS}s" --out "$DIR/load" >"$OUT/load.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["requests"]; print("load:", r["total"], "requests,", r["succeeded"], "succeeded, p99", d["load"]["end_to_end"]["p99"], "ms")' "$OUT/load.json"
echo churn >"$DIR/phase"
# Clients that connect and leave: 50 a second, each one request on a new connection; one in
# five hangs up without reading the answer.
python3 - "$PROXY_PORT" "$CHURN" <<'PY'
import socket, sys, time
port, seconds = int(sys.argv[1]), int(sys.argv[2])
body = b'{"contents":[{"parts":[{"text":"a short visit"}]}]}'
req = (b"POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: p\r\n"
       b"x-goog-api-key: bench-client-token-0001\r\ncontent-type: application/json\r\n"
       b"content-length: %d\r\n\r\n" % len(body)) + body
end, n, ok = time.time() + seconds, 0, 0
while time.time() < end:
    tick = time.time()
    for _ in range(50):
        n += 1
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            if n % 5:
                ok += b" 200 " in s.recv(65536)
            s.close()
        except OSError:
            pass
    time.sleep(max(0.0, 1.0 - (time.time() - tick)))
print(f"churn: {n} connections, {ok} answers read")
PY
echo quiet >"$DIR/phase"
sleep 60
sample end >>"$OUT/soak.csv"
python3 - "$OUT/soak.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = rows[0]
warm = next(r for r in rows if r["phase"] == "load" and int(r["seconds"]) >= 60)
end = rows[-1]
peak = max(int(r["rss_kb"]) for r in rows)
print(f"RSS: baseline {int(base['rss_kb'])/1024:.1f} MB, after warm-up {int(warm['rss_kb'])/1024:.1f} MB, "
      f"peak {peak/1024:.1f} MB, end {int(end['rss_kb'])/1024:.1f} MB "
      f"({100*(int(end['rss_kb'])-int(warm['rss_kb']))/int(warm['rss_kb']):+.1f} % of warm-up)")
print(f"descriptors: baseline {base['fds']}, end {end['fds']}")
PY
