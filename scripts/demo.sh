#!/usr/bin/env bash
# The main job: a three-peer Warren mesh on this machine running a real web service.
#
#   scripts/demo.sh          build, start 3 peers, create `web` (3 replicas), show it serving,
#                            show the cluster from another peer, then stop the peers
#   KEEP=1 scripts/demo.sh   same, but leave the mesh running (stop it with: scripts/demo.sh down)
#   scripts/demo.sh down     stop the peers and remove their containers and data
#
# Peers: APIs on 127.0.0.1:7711-7713, QUIC on 127.0.0.1 UDP 7721-7723, data in $DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/warren-demo}
BIN=target/debug

down() {
  for pidfile in "$DEMO_DIR"/node*/pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=warren.service=web --filter label=warren.demo=1 2>/dev/null || true)
    nets=""
    for f in "$DEMO_DIR"/node*/peer_id; do
      [ -f "$f" ] || continue
      ids="$ids $(docker ps -aq --filter "label=warren.node=$(cat "$f")")"
      nets="$nets $(docker network ls -q --filter "label=warren.node=$(cat "$f")")"
    done
    ids=$(echo $ids)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
    # Each node's overlay network (it outlives the node, as its tasks do).
    nets=$(echo $nets)
    [ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1 || true
  fi
  rm -rf "$DEMO_DIR"
}

if [ "${1:-}" = "down" ]; then down; echo "demo mesh stopped"; exit 0; fi

bash scripts/ensure-docker.sh
echo "== building warren-node and warren-cli"
cargo build --quiet --bin warren-node --bin warren-cli
down
mkdir -p "$DEMO_DIR"
[ "${KEEP:-0}" = 1 ] || trap down EXIT

cli() { local n=$1; shift; "$BIN/warren-cli" --peer "http://127.0.0.1:771$n" "$@"; }

wait_api() {
  for _ in $(seq 1 100); do
    cli "$1" cluster status >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "node$1 did not come up; its log:" >&2; cat "$DEMO_DIR/node$1/log" >&2; exit 1
}

start() {
  local n=$1; shift
  mkdir -p "$DEMO_DIR/node$n"
  "$BIN/warren-node" up --name "node$n" --data-dir "$DEMO_DIR/node$n" \
    --listen "/ip4/127.0.0.1/udp/772$n/quic-v1" --api "127.0.0.1:771$n" "$@" \
    >"$DEMO_DIR/node$n/out" 2>"$DEMO_DIR/node$n/log" &
  echo $! >"$DEMO_DIR/node$n/pid"
  wait_api "$n"
  cli "$n" -o json cluster status | sed -n 's/.*"node": *"\([^"]*\)".*/\1/p' | head -1 >"$DEMO_DIR/node$n/peer_id"
}

echo "== starting node1 (--init)"
start 1 --init demo
for n in 2 3; do
  token=$(cli 1 join-token create 2>/dev/null)
  echo "== starting node$n (WARREN_JOIN_TOKEN: a token minted at node1)"
  # Three peers on one host share one network namespace: only one of them can route the
  # overlay's prefix, so node2 and node3 report their overlay off (their tasks still get
  # overlay addresses, on bridges of this same host).
  WARREN_JOIN_TOKEN="$token" start "$n" --overlay-interface "warren-demo$n" --overlay-port "5182$n"
done

echo "== creating service web (3 replicas of busybox httpd) through node1"
cli 1 service create web --image warren/busybox:latest --replicas 3 --publish 80

echo "== waiting for 3 running replicas"
for _ in $(seq 1 60); do
  running=$(cli 2 -o json service ps web 2>/dev/null | grep -c '"state": "running"' || true)
  [ "$running" = 3 ] && break
  sleep 0.5
done
cli 2 service ps web

port=$(cli 3 -o json service ps web | sed -n 's/.*"host_port": *\([0-9]*\).*/\1/p' | head -1)
[ -n "$port" ] || { echo "no published port found" >&2; exit 1; }
echo "== GET http://127.0.0.1:$port/ (a replica's published port)"
body=$(busybox wget -q -O - "http://127.0.0.1:$port/")
echo "$body"
[ "$body" = "hello from warren" ] || { echo "unexpected answer" >&2; exit 1; }

echo "== a replica on node1 reaches another replica by name (the overlay's DNS)"
node1=$(cat "$DEMO_DIR/node1/peer_id")
on1=$(docker ps -q --filter "label=warren.node=$node1" --filter label=warren.service=web | head -1)
state=$(cli 1 -o json node inspect node1 | sed -n 's/.*"state": *"\(on\|off\|disabled\)".*/\1/p' | head -1)
named=no
if [ "$state" = on ] && [ -n "$on1" ]; then
  for _ in $(seq 1 50); do
    docker inspect -f '{{json .HostConfig.Dns}}' "$on1" | grep -q : && { named=yes; break; }
    sleep 0.2
  done
fi
if [ "$state" = on ] && [ -n "$on1" ] && [ "$named" = no ]; then
  echo "  node1's replica is not on the overlay (why: grep -i overlay $DEMO_DIR/node1/log): names skipped"
elif [ "$state" = on ] && [ -n "$on1" ]; then
  # A slot on another node, from the table (TASK is `web.<slot>`, NODE the member's name).
  other=$(cli 1 service ps web | awk 'NR > 1 && $2 != "node1" { sub(/^web\./, "", $1); print $1; exit }')
  [ -n "$other" ] || { echo "no replica of web runs on another node than node1" >&2; exit 1; }
  docker exec "$on1" sh -c 'nslookup -type=AAAA web' | sed -n 's/^Address: *\([0-9a-f:]*\)$/  web -> \1/p'
  echo "  GET http://$other.web.warren/ from node1's replica (slot $other runs on another node):"
  answer=$(docker exec "$on1" sh -c "wget -q -O - http://$other.web.warren/")
  echo "  $answer"
  [ "$answer" = "hello from warren" ] || { echo "unexpected answer by name" >&2; exit 1; }
else
  echo "  the overlay is off on node1 (no /dev/net/tun or no CAP_NET_ADMIN here): names skipped"
fi

echo "== cluster status seen from node3"
cli 3 cluster status
if [ "${KEEP:-0}" = 1 ]; then
  echo "== the mesh keeps running; stop it with: scripts/demo.sh down"
fi
