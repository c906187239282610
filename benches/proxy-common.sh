# Shared by benches/proxy-store.sh and benches/proxy-log.sh (sourced, not run): a temporary
# folder, the fake pinned to core 0 answering in a fixed 20 ms, and `e2e`, one open-loop run
# of the load runner (also on core 0). Expects KEYSIM set.
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
FAKE_PORT=$((18500 + RANDOM % 500))
FIXED='provider.latency={ median = "20ms", p99 = "20ms" }'
taskset -c 0 "$KEYSIM" mock --scenario benches/proxy-rate.toml --set "$FIXED" --port "$FAKE_PORT" >/dev/null &
sleep 0.5
FAKE=http://127.0.0.1:$FAKE_PORT

e2e() { # rate seconds target token-variable -> "p50 p99" in ms
  taskset -c 0 "$KEYSIM" load benches/proxy-rate.toml --target "$3" --no-engine --token-env "$4" --json --no-plots \
    --set "$FIXED" --set "traffic.steady.arrival.rate=$1/s" --set "scenario.duration=$2s" --out "$DIR/load" |
    python3 -c 'import json,sys; l=json.load(sys.stdin)["load"]; e=l["end_to_end"]; print(e["p50"], e["p99"])'
}
