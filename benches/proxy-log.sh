#!/usr/bin/env bash
# What the traffic log costs: open-loop Poisson traffic at 1,000 requests/s (`keysim load
# --no-engine`) through two proxies on the in-memory store, one writing `[proxy] traffic_log`,
# interleaved `rounds` times over the same schedule (which goes first alternating); the fake
# answers in a fixed 20 ms. The proxies are pinned to core 1, the fake and the load runner to
# core 0.
#   bash benches/proxy-log.sh [path/to/keysim] [rounds] [rate] [aa]
# With `aa`, neither proxy logs: the differences are the bench's own noise.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYSIM=${1:-target/release/keysim}
ROUNDS=${2:-3}
RATE=${3:-1000}
source benches/proxy-common.sh
OFF_PORT=$((19100 + RANDOM % 400))
ON_PORT=$((OFF_PORT + 400))
if [[ "${4:-}" == aa ]]; then
  cp benches/proxy-bench.toml "$DIR/logged.toml"
else
  sed "s|^\[proxy\]$|[proxy]\ntraffic_log = \"$DIR/traffic.jsonl\"|" benches/proxy-bench.toml >"$DIR/logged.toml"
fi
taskset -c 1 "$KEYSIM" proxy --config benches/proxy-bench.toml --listen "127.0.0.1:$OFF_PORT" --upstream "$FAKE" \
  >/dev/null 2>"$DIR/off.log" &
taskset -c 1 "$KEYSIM" proxy --config "$DIR/logged.toml" --listen "127.0.0.1:$ON_PORT" --upstream "$FAKE" \
  >/dev/null 2>"$DIR/on.log" &
sleep 1
export PROXY_TOKEN=bench-client-token-0001

printf '%-6s %-22s %-22s %s\n' round "log off p50 p99" "log on p50 p99" "the log adds p50 / p99"
for round in $(seq "$ROUNDS"); do
  # Which goes first alternates (off-on, on-off, ...): a drift over the run cancels out.
  if ((round % 2)); then
    read -r a50 a99 <<<"$(e2e "$RATE" 20 "http://127.0.0.1:$OFF_PORT" PROXY_TOKEN)"
    read -r b50 b99 <<<"$(e2e "$RATE" 20 "http://127.0.0.1:$ON_PORT" PROXY_TOKEN)"
  else
    read -r b50 b99 <<<"$(e2e "$RATE" 20 "http://127.0.0.1:$ON_PORT" PROXY_TOKEN)"
    read -r a50 a99 <<<"$(e2e "$RATE" 20 "http://127.0.0.1:$OFF_PORT" PROXY_TOKEN)"
  fi
  adds=$(python3 -c "print(f'{($b50-$a50)*1000:+.0f} / {($b99-$a99)*1000:+.0f} µs')")
  printf '%-6s %-22s %-22s %s\n' "$round" "$a50 $a99" "$b50 $b99" "$adds"
done
echo "lines written: $(cat "$DIR"/traffic.jsonl* 2>/dev/null | wc -l); dropped: $(curl -s "http://127.0.0.1:$ON_PORT/metrics" | grep '^keysim_traffic_log_dropped_total' | cut -d' ' -f2)"
