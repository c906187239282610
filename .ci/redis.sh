#!/usr/bin/env bash
# Starts what the Redis tests need, each on a free local port, and prints the environment
# they read:
#   KEYSIM_REDIS_URL      one standalone server
#   KEYSIM_REDIS_CLUSTER  a three-node Redis Cluster (host:port,host:port,host:port)
#   KEYSIM_REDIS_SERVER   the redis-server binary (tests start and stop their own servers)
# Usage: eval "$(bash .ci/redis.sh start DIR)"; bash .ci/redis.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?state directory}

# A free port whose cluster bus port (+10000) is free too (Redis Cluster needs both, <= 65535).
free_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000):
        print(p); break
PY
}

start_server() { # port dir [extra args]
  local port=$1 d=$2; shift 2
  mkdir -p "$d"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$d" --save '' --appendonly no \
    --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" "$@"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis-server on port $port did not start; see $d/redis.log" >&2; exit 1
}

case $cmd in
start)
  mkdir -p "$dir"
  single=$(free_port)
  start_server "$single" "$dir/single" >&2
  nodes=()
  for i in 1 2 3; do
    p=$(free_port)
    start_server "$p" "$dir/node$i" --cluster-enabled yes --cluster-config-file "$dir/node$i/nodes.conf" \
      --cluster-node-timeout 2000 >&2
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 ||
    { cat "$dir/cluster-create.log" >&2; exit 1; }
  for _ in $(seq 100); do
    redis-cli -p "${nodes[0]#*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break; sleep 0.1
  done
  redis-cli -p "${nodes[0]#*:}" cluster info | grep -q 'cluster_state:ok' || { echo "cluster not ok" >&2; exit 1; }
  echo "export KEYSIM_REDIS_URL=redis://127.0.0.1:$single"
  echo "export KEYSIM_REDIS_CLUSTER=$(IFS=,; echo "${nodes[*]}")"
  echo "export KEYSIM_REDIS_SERVER=$(command -v redis-server)"
  ;;
stop)
  for pid in "$dir"/*/redis.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; done
  ;;
esac
