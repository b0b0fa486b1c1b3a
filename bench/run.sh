#!/usr/bin/env bash
# Runs the flockmq-bench set against flockmq and mosquitto on this machine and prints a comparison.
#
#   bench/run.sh [--quick] [--run-id ID] [--brokers "flockmq mosquitto"] [--protocols "3.1.1 5"] [--no-build]
#
# Each broker runs pinned to CPU 0 (taskset -c 0), the load generator to CPU 1. All traffic stays
# on loopback. With flockmq, a cluster section follows: three nodes n1@127.0.0.1, n2@127.0.0.2,
# n3@127.0.0.3 (static seeds), all three on CPU 0, QoS 0/1 1->1 from node 1 to node 3 and on
# node 1 alone (mosquitto has no clustering: n/a). Results: bench/results/RUN_ID.json (combined) and bench/results/RUN_ID/ (raw lines
# and broker logs). Environment knobs (defaults in brackets):
#   BENCH_PROFILE   cargo profile for the generator and flockmq [release]; "dev" for a quick check
#   BENCH_INFLIGHT  broker max in-flight per client, for both brokers, and the publisher window [32]
#   BENCH_QUEUED    broker max queued messages per client, for both brokers [1000000]
#   BENCH_CONNS     idle connections in the memory test [10000]
#   BENCH_RATE      messages/s of the latency tests [5000]
#   BENCH_FLOCKMQ   flockmq binary to run instead of the one built here (with --no-build)
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

QUICK=0
RUN_ID=""
BROKERS="flockmq mosquitto"
PROTOCOLS=""
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --run-id) RUN_ID="${2:?--run-id needs a value}"; shift ;;
    --brokers) BROKERS="${2:?--brokers needs a value}"; shift ;;
    --protocols) PROTOCOLS="${2:?--protocols needs a value}"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${BENCH_PROFILE:-release}"
INFLIGHT="${BENCH_INFLIGHT:-32}"   # flockmq's default mqtt.max_inflight
QUEUED="${BENCH_QUEUED:-1000000}"
CONNS="${BENCH_CONNS:-10000}"
RATE="${BENCH_RATE:-5000}"
RUN_ID="${RUN_ID:-$(date +%Y%m%d-%H%M%S)}"
if [[ $QUICK == 1 ]]; then
  MODE=quick; WARMUP=1; DURATION=3; PROTOCOLS="${PROTOCOLS:-5}"
else
  MODE=full; WARMUP=2; DURATION=10; PROTOCOLS="${PROTOCOLS:-3.1.1 5}"
fi
case "$PROFILE" in
  dev|debug) PROFILE=dev; TARGET_DIR="$ROOT/target/debug" ;;
  *) TARGET_DIR="$ROOT/target/$PROFILE" ;;
esac
GEN="$TARGET_DIR/flockmq-bench"
FLOCKMQ="${BENCH_FLOCKMQ:-$TARGET_DIR/flockmq}"
OUT="$ROOT/bench/results/$RUN_ID"
mkdir -p "$OUT"

log() { printf '== %s\n' "$*" >&2; }

# --- pinning: broker on CPU 0, generator on CPU 1 (when there are two) ---
if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  PIN_BROKER=(taskset -c 0)
  PIN_GEN=(taskset -c 1)
else
  log "fewer than 2 CPUs or no taskset: running unpinned (figures will be noisier)"
  PIN_BROKER=()
  PIN_GEN=()
fi

# --- file descriptors: the idle-connection test needs CONNS in the generator and in the broker ---
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $((CONNS + 1024)) ]]; then
  ulimit -Hn $((CONNS + 1024)) 2>/dev/null || true
  hard=$(ulimit -Hn)
fi
ulimit -n "$hard"
if [[ $hard != unlimited && $hard -lt $((CONNS + 256)) ]]; then
  log "open-file limit $hard is too low for $CONNS connections; using $((hard - 256))"
  CONNS=$((hard - 256))
fi

# --- mosquitto: install when missing (Debian package, needs root) ---
if [[ " $BROKERS " == *" mosquitto "* ]] && ! command -v mosquitto >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing mosquitto"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else
    log "mosquitto is not installed and I cannot install it (need root and apt-get)"
    exit 1
  fi
fi

# --- build ---
if [[ $BUILD == 1 ]]; then
  log "building ($PROFILE)"
  packages=(-p flockmq-bench)
  [[ " $BROKERS " == *" flockmq "* ]] && packages+=(-p flockmq)
  (cd "$ROOT" && cargo build --profile "$PROFILE" "${packages[@]}")
fi
[[ -x $GEN ]] || { log "generator not found at $GEN (build it, or drop --no-build)"; exit 1; }

# --- broker lifecycle ---
BROKER_PID=""
stop_broker() {
  [[ -n $BROKER_PID ]] || return 0
  kill "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}
# stop_pid PID: TERM, up to 5 s of grace, then KILL.
stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
CLUSTER_PIDS=()
stop_cluster() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do stop_pid "$pid"; done
  CLUSTER_PIDS=()
}
GEN_PID=""
cleanup() {
  [[ -z $GEN_PID ]] || kill "$GEN_PID" 2>/dev/null || true
  stop_broker
  stop_cluster
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# port_free PORT [HOST]: nothing listens on HOST:PORT (HOST defaults to 127.0.0.1).
port_free() { ! (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }
free_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

# Waits until the broker answers CONNECT; fails early if its process died.
wait_ready() {
  local port=$1
  for _ in $(seq 100); do
    kill -0 "$BROKER_PID" 2>/dev/null || return 1
    if "$GEN" wait --broker "127.0.0.1:$port" --protocol 3.1.1 --timeout 0.2 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# start_broker NAME TAG: starts a fresh broker, sets BROKER_PID and PORT.
start_broker() {
  local name=$1 tag=$2
  PORT=$(free_port 18830)
  case "$name" in
    mosquitto)
      local conf="$OUT/mosquitto.conf"
      cat >"$conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_queued_messages $QUEUED
max_inflight_messages $INFLIGHT
# flockmq writes without Nagle; give mosquitto the same so latency compares like for like.
set_tcp_nodelay true
persistence false
log_type error
log_type warning
EOF
      "${PIN_BROKER[@]}" mosquitto -c "$conf" >"$OUT/mosquitto-$tag.log" 2>&1 &
      BROKER_PID=$!
      wait_ready "$PORT" && return 0
      ;;
    flockmq)
      [[ -x $FLOCKMQ ]] || { log "flockmq binary not found at $FLOCKMQ"; return 1; }
      local admin data="$OUT/flockmq-data-$tag"
      admin=$(free_port $((PORT + 100)))
      mkdir -p "$data"
      local base=(start --set "listener.tcp.bind=127.0.0.1:$PORT" --set "admin.bind=127.0.0.1:$admin"
        --set log.level=warn)
      local limits=(--set "mqtt.max_inflight=$INFLIGHT" --set "mqtt.max_queued_messages=$QUEUED")
      # Run in its own directory so ./data (node.data_dir's default) lands in the results.
      (cd "$data" && exec "${PIN_BROKER[@]}" "$FLOCKMQ" "${base[@]}" "${limits[@]}") \
        >"$OUT/flockmq-$tag.log" 2>&1 &
      BROKER_PID=$!
      wait_ready "$PORT" && return 0
      stop_broker
      log "flockmq did not start with the mqtt.* limits (see $OUT/flockmq-$tag.log); retrying with its defaults"
      (cd "$data" && exec "${PIN_BROKER[@]}" "$FLOCKMQ" "${base[@]}") >>"$OUT/flockmq-$tag.log" 2>&1 &
      BROKER_PID=$!
      wait_ready "$PORT" && return 0
      ;;
    *) log "unknown broker $name"; return 1 ;;
  esac
  log "$name did not start (log: $OUT/$name-$tag.log)"
  tail -n 5 "$OUT/$name-$tag.log" >&2 || true
  stop_broker
  return 1
}

# gen NAME SUBCOMMAND ARGS...: one test; its JSON line goes to the broker's results file.
gen() {
  local broker=$1 pid; shift
  for pid in "$BROKER_PID" "${CLUSTER_PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$broker is not running; skipping: $*"
      return 0
    fi
  done
  # In the background plus `wait`, so Ctrl-C or TERM stops the run at once, not after the test.
  "${PIN_GEN[@]}" "$GEN" "$@" --broker "127.0.0.1:$PORT" >>"$OUT/$broker.jsonl" &
  GEN_PID=$!
  wait "$GEN_PID" || log "$broker: test failed: $*"
  GEN_PID=""
}

run_broker() {
  local b=$1
  : >"$OUT/$b.jsonl"
  # Memory first, on a fresh process: memory freed by earlier tests would be reused by the
  # connections and hide their cost.
  log "$b: $CONNS idle connections"
  if start_broker "$b" conns; then
    gen "$b" conns --count "$CONNS" --broker-pid "$BROKER_PID"
    stop_broker
  fi
  log "$b: throughput and latency ($MODE: ${WARMUP}s warm-up + ${DURATION}s each; protocols $PROTOCOLS)"
  start_broker "$b" load || return 0
  local t=(--warmup "$WARMUP" --duration "$DURATION" --window "$INFLIGHT")
  for p in $PROTOCOLS; do
    gen "$b" pubsub --name qos0 --qos 0 --protocol "$p" "${t[@]}"
    gen "$b" pubsub --name qos1 --qos 1 --protocol "$p" "${t[@]}"
    gen "$b" pubsub --name qos2 --qos 2 --protocol "$p" "${t[@]}"
    gen "$b" pubsub --name fanout --qos 0 --subscribers 100 --protocol "$p" "${t[@]}"
    gen "$b" pubsub --name fanin --qos 0 --publishers 100 --wildcard --protocol "$p" "${t[@]}"
    gen "$b" latency --name latency-qos0 --qos 0 --rate "$RATE" --protocol "$p" "${t[@]}"
    gen "$b" latency --name latency-qos1 --qos 1 --rate "$RATE" --protocol "$p" "${t[@]}"
  done
  stop_broker
}

# --- flockmq cluster: three nodes on one machine, each cluster listener on its own loopback IP ---
CLUSTER_DESC=""
# start_cluster: starts n1..n3, waits for MQTT and for `cluster status` to list all three; sets
# CLUSTER_PIDS, CLUSTER_MQTT (ports of n1..n3) and CLUSTER_ADMIN.
start_cluster() {
  [[ -x $FLOCKMQ ]] || { log "flockmq binary not found at $FLOCKMQ"; return 1; }
  local seeds="n1@127.0.0.1,n2@127.0.0.2,n3@127.0.0.3" cport=14370 next=18930 i
  while ! { port_free "$cport" 127.0.0.1 && port_free "$cport" 127.0.0.2 && port_free "$cport" 127.0.0.3; }; do
    cport=$((cport + 1))
  done
  CLUSTER_MQTT=(); CLUSTER_ADMIN=()
  for i in 1 2 3; do
    local mqtt admin data="$OUT/flockmq-cluster-n$i"
    mqtt=$(free_port "$next"); admin=$(free_port $((mqtt + 1))); next=$((admin + 1))
    CLUSTER_MQTT+=("$mqtt"); CLUSTER_ADMIN+=("$admin")
    mkdir -p "$data"
    (cd "$data" && exec "${PIN_BROKER[@]}" "$FLOCKMQ" start --set "node.name=n$i@127.0.0.$i" \
      --set "listener.tcp.bind=127.0.0.1:$mqtt" --set "admin.bind=127.0.0.1:$admin" \
      --set cluster.discovery=static --set "cluster.static.seeds=$seeds" --set "cluster.port=$cport" \
      --set log.level=warn --set "mqtt.max_inflight=$INFLIGHT" --set "mqtt.max_queued_messages=$QUEUED") \
      >"$OUT/flockmq-cluster-n$i.log" 2>&1 &
    CLUSTER_PIDS+=($!)
  done
  for i in 0 1 2; do
    local ready=0
    for _ in $(seq 100); do
      kill -0 "${CLUSTER_PIDS[$i]}" 2>/dev/null || break
      if "$GEN" wait --broker "127.0.0.1:${CLUSTER_MQTT[$i]}" --timeout 0.2 2>/dev/null; then ready=1; break; fi
      sleep 0.1
    done
    if [[ $ready == 0 ]]; then
      log "cluster node n$((i + 1)) did not start (log: $OUT/flockmq-cluster-n$((i + 1)).log)"
      tail -n 5 "$OUT/flockmq-cluster-n$((i + 1)).log" >&2 || true
      stop_cluster
      return 1
    fi
  done
  local want="Cluster status: [{running_nodes,['n1@127.0.0.1','n2@127.0.0.2','n3@127.0.0.3']}]" status=""
  for _ in $(seq 150); do
    status=$("$FLOCKMQ" ctl --admin "127.0.0.1:${CLUSTER_ADMIN[0]}" cluster status 2>&1 || true)
    [[ $status == "$want" ]] && break
    sleep 0.2
  done
  if [[ $status != "$want" ]]; then
    log "the cluster did not form in 30 s; node 1 says: $status"
    stop_cluster
    return 1
  fi
  log "cluster formed: $status"
  CLUSTER_DESC="3 flockmq nodes n1@127.0.0.1 n2@127.0.0.2 n3@127.0.0.3 (static seeds, cluster.port $cport), all three on ${PIN_BROKER[*]:-no pinning}, generator on ${PIN_GEN[*]:-no pinning}; cluster-qosN: publisher on n1, subscriber on n3; cluster-local-qosN: both on n1"
}

run_cluster() {
  log "flockmq cluster: 3 nodes all pinned to ${PIN_BROKER[*]:-nothing}, generator on ${PIN_GEN[*]:-nothing}; QoS 0/1 1->1 node 1 -> node 3 and node 1 alone"
  start_cluster || return 0
  # Subscribers on node 3 wait (bounded, --route-wait) until a probe published on node 1 reaches
  # them, i.e. until node 1 has the route: only then does the clock start.
  local t=(--warmup "$WARMUP" --duration "$DURATION" --window "$INFLIGHT")
  local n1="127.0.0.1:${CLUSTER_MQTT[0]}" n3="127.0.0.1:${CLUSTER_MQTT[2]}"
  BROKER_PID="${CLUSTER_PIDS[0]}"; PORT="${CLUSTER_MQTT[0]}"
  for p in $PROTOCOLS; do
    gen flockmq pubsub --name cluster-qos0 --qos 0 --sub-broker "$n3" --protocol "$p" "${t[@]}"
    gen flockmq pubsub --name cluster-qos1 --qos 1 --sub-broker "$n3" --protocol "$p" "${t[@]}"
    gen flockmq pubsub --name cluster-local-qos0 --qos 0 --sub-broker "$n1" --protocol "$p" "${t[@]}"
    gen flockmq pubsub --name cluster-local-qos1 --qos 1 --sub-broker "$n1" --protocol "$p" "${t[@]}"
  done
  BROKER_PID=""
  stop_cluster
}

MOSQ_VERSION=$( (mosquitto -h 2>/dev/null || true) | sed -n 's/^mosquitto version //p' | head -n 1)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
log "run $RUN_ID ($MODE): $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, mosquitto ${MOSQ_VERSION:-not installed}"

for b in $BROKERS; do
  run_broker "$b"
done

if [[ " $BROKERS " == *" flockmq "* ]]; then
  run_cluster
fi
cluster_context=()
[[ -z $CLUSTER_DESC ]] || cluster_context=(--context "cluster=$CLUSTER_DESC")

report_args=()
for b in $BROKERS; do report_args+=(--broker "$b=$OUT/$b.jsonl"); done
"$GEN" report "${report_args[@]}" --run-id "$RUN_ID" --mode "$MODE" \
  --context "nproc=$(nproc)" \
  --context "cpu_model=${CPU_MODEL:-unknown}" \
  --context "mosquitto_version=${MOSQ_VERSION:-not installed}" \
  --context "kernel=$(uname -r)" \
  --context "flockmq_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --context "profile=$PROFILE" \
  --context "pinning=${PIN_BROKER[*]:-none} (broker) / ${PIN_GEN[*]:-none} (generator)" \
  --context "broker_limits=max_inflight $INFLIGHT, max_queued_messages $QUEUED" \
  --context "generator=window $INFLIGHT, max lag 10000 deliveries, payload 64 B, latency rate $RATE/s" \
  --context "timing=${WARMUP}s warm-up + ${DURATION}s measured per test" \
  "${cluster_context[@]}" \
  --context "wall_seconds=$SECONDS" \
  --out "$ROOT/bench/results/$RUN_ID.json"
