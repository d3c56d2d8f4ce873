#!/usr/bin/env bash
# gridraft side by side with the stock Selenium session maps and etcd, on this machine, in one run.
#
#   scripts/bench.sh            # compare: Java LocalSessionMap, Java RedisBackedSessionMap,
#                               #   etcd x3, gridraft x1, gridraft x3 (spread / follower / leader,
#                               #   read-mode follower and leader), the ceiling x3 (a constant-
#                               #   answer server, full GET only); writes the table into
#                               #   docs/benchmarks.md
#   scripts/bench.sh scale      # 1k / 100k / 1M live sessions, memory per session, start and
#                               #   restart times, churn; writes its section of docs/benchmarks.md
#   scripts/bench.sh targets    # issue 16's targets: Java LocalSessionMap, etcd x3, gridraft x3
#                               #   spread and the ceiling running together, their cells measured
#                               #   in turn, RUNS rounds; writes its section of docs/benchmarks.md
#   scripts/bench.sh all        # compare and scale
#   CHURN_SESSIONS=10000000 scripts/bench.sh churn
#                               # churn only, memory and disk every twentieth (docs untouched)
#   GRIDRAFT_BIN=old/gridraft scripts/bench.sh gridraft
#                               # gridraft x1 and x3 (spread) and the ceiling x3 only, medians
#                               #   and x3's full GET as a share of the ceiling printed, docs
#                               #   untouched (before/after comparisons of a change)
#   scripts/bench.sh tls       # gridraft x3 spread, full GET and add, plain against HTTPS on the
#                               #   public port and against TLS on both ports (peer mTLS),
#                               #   alternating, RUNS runs each; medians, server CPU per request
#                               #   and the cost of TLS printed, docs untouched
#   GRIDRAFT_BIN=old/gridraft scripts/bench.sh cpu
#                               # server CPU per full GET and per add of a three-member cluster
#                               #   (all members, from /proc), each run printed, docs untouched
#   scripts/bench.sh profile    # where the three members' CPU goes under x3 spread full GETs
#                               #   and adds (perf record with call graphs), by phase of the
#                               #   request path, leader and followers apart, docs untouched
#   GRIDRAFT_BIN=old/gridraft scripts/bench.sh snapshot
#                               # CPU and time of one snapshot of SNAPSHOT_SESSIONS (60000)
#                               #   sessions written by a member's stop, RUNS runs, docs untouched
#
# Environment: BENCH_RUNS (3), BENCH_DURATION (seconds measured per run, 5), BENCH_WARMUP (1),
# BENCH_FIRST_WARMUP (8, more warm-up seconds before the first run of each workload),
# BENCH_CONCURRENCY (64), BENCH_DIR (/tmp/gridraft-bench), GRIDRAFT_SELENIUM_JAR,
# SCALE_MAX (1000000), SNAPSHOT_SESSIONS (60000), CHURN_SESSIONS (1000000), JAVA_SESSIONS (100000, the Java map's memory test),
# GRIDRAFT_BIN (another gridraft build), BENCH_SKIP_BUILD=1,
# BENCH_MEMBER_THREADS (1: each member of a three-member gridraft or etcd cluster gets one
# thread's share of the cores, `--worker-threads 1` and GOMAXPROCS=1, and so does each port of
# the ceiling server; 0 leaves their defaults, one thread per core each, six busy threads on two
# cores).
# Everything listens on 127.0.0.1 only. Client and servers share this machine's cores.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WHAT="${1:-compare}"
RUNS="${BENCH_RUNS:-3}"
DUR="${BENCH_DURATION:-5}"
WARM="${BENCH_WARMUP:-1}"
FIRST_WARM="${BENCH_FIRST_WARMUP:-8}"
CONC="${BENCH_CONCURRENCY:-64}"
MEMBER_THREADS="${BENCH_MEMBER_THREADS:-1}"
WORK="${BENCH_DIR:-/tmp/gridraft-bench}"
JAR="${GRIDRAFT_SELENIUM_JAR:-$ROOT/../shared/selenium/selenium-server-4.48.0.jar}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SCALE_MAX="${SCALE_MAX:-1000000}"
SNAPSHOT_SESSIONS="${SNAPSHOT_SESSIONS:-60000}"
CHURN_SESSIONS="${CHURN_SESSIONS:-1000000}"
RESULTS="$WORK/results"
SECRET_FILE="$WORK/cluster-secret"
# The peer port's scheme and curl's TLS options for it (set by `tls_cost` for peer mTLS).
PEER_SCHEME=http
PEER_CURL=()

log() { echo "bench: $*" >&2; }

# --- prerequisites -------------------------------------------------------------------------
missing=()
command -v java >/dev/null || missing+=(default-jre-headless)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
[ -f "$JAR" ] || { log "Selenium jar not found at $JAR (set GRIDRAFT_SELENIUM_JAR)"; exit 1; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --bin gridraft --bin gridraft-bench >&2
fi
GR="${GRIDRAFT_BIN:-$TARGET/release/gridraft}"
BENCH="$TARGET/release/gridraft-bench"

mkdir -p "$WORK" "$RESULTS"
[ -f "$SECRET_FILE" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$SECRET_FILE")
chmod 600 "$SECRET_FILE"
SECRET="$(cat "$SECRET_FILE")"

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  # Processes started through start_timed are not this shell's children: poll until gone.
  for p in "${PIDS[@]:-}"; do
    for _ in $(seq 1 200); do [ -n "$p" ] && kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
  PIDS=()
}
trap cleanup EXIT

spawn() { # spawn LOGFILE CMD... ; records the pid in $LAST_PID
  "${@:2}" >"$1" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

stop_all() { cleanup; SERVER_PIDS=""; sleep 0.5; }

# The processes of the system under test, comma separated: `bench` has gridraft-bench report
# their CPU during each run's measured seconds (server CPU per request). Set by each start_*.
SERVER_PIDS=""
add_server_pid() { SERVER_PIDS+="${SERVER_PIDS:+,}$1"; }

wait_for() { # wait_for URL [STATUS] [SECONDS]
  local url="$1" want="${2:-2}" secs="${3:-60}" code
  for _ in $(seq 1 $((secs * 20))); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 ${CURL_CA:+--cacert "$CURL_CA"} "$url" || true)"
    [[ "$code" == "$want"* ]] && return 0
    sleep 0.05
  done
  log "timeout waiting for $url"; return 1
}

# free_ports N: N distinct ports nothing listens on at 127.0.0.1 (bound to port 0 together, then
# released), space separated.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# settle PID: waits (at most 120 s) until PID uses under a tenth of a core over one second, so
# a level is measured in steady state, not while the snapshot its load triggered is written;
# prints the milliseconds waited.
settle() {
  local t0; t0="$(date +%s%N)"
  for _ in $(seq 1 120); do
    local a b; a="$(cpu_ticks "$1")"; sleep 1; b="$(cpu_ticks "$1")"
    [ $((b - a)) -lt 10 ] && break
  done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

# bench SYSTEM WORKLOAD URLS ARGS... : RUNS measured runs into $RESULTS. The first run of each
# workload warms up for BENCH_FIRST_WARMUP more seconds: the Java servers' three runs otherwise
# rose from one to the next (their JIT still compiling the workload's path).
bench() {
  local system="$1" workload="$2" urls="$3"; shift 3
  for i in $(seq 1 "$RUNS"); do
    local warm="$WARM"; [ "$i" = 1 ] && warm=$((WARM + FIRST_WARM))
    "$BENCH" --url "$urls" --concurrency "$CONC" --duration "$DUR" --warmup "$warm" \
      --label "$system/$workload" --json "$RESULTS/$system.$workload.$i.json" \
      ${SERVER_PIDS:+--server-pids "$SERVER_PIDS"} "$@" >&2 || true
  done
}

# The workloads issue 16's targets compare, interleaved: Java LocalSessionMap, etcd x3, gridraft
# x3 (spread) and the ceiling all started at once, then RUNS rounds each measuring every cell once
# in turn (Java full GET, `/uri` and add, etcd put, gridraft full GET and add, the ceiling's full
# GET), so the host's drift, which moved Java's own rate by up to 108 % between runs of the
# side-by-side table, falls on every system of a round alike. Each ratio is taken within a round;
# the report gives every round and the medians, and writes its section of docs/benchmarks.md.
# Every round's add cells write the same 10 000 sessions (WRITES; the warm-up round creates them),
# so each round measures maps of one size: with a new prefix per round, gridraft's map would
# grow by 10 000 sessions a round, and with it each snapshot, which the adds pay for.
targets() {
  rm -f "$RESULTS"/*.json
  machine_json
  local java etcd gr ceiling prefix="pre$RANDOM$RANDOM" writes="add$RANDOM$RANDOM" i cell
  local e="http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793"
  start_java_local; java="$SERVER_PIDS"; SERVER_PIDS=""
  start_etcd; etcd="$SERVER_PIDS"; SERVER_PIDS=""
  start_gridraft gr3 3; gr="$SERVER_PIDS"; SERVER_PIDS=""
  start_ceiling; ceiling="$SERVER_PIDS"; SERVER_PIDS=""
  # Each cell: SYSTEM WORKLOAD PIDS URLS ARGS...
  local cells=(
    "java-local get $java http://127.0.0.1:6001 --mode read --read-kind full --population 1000 --skip-preload --id-prefix $prefix"
    "java-local uri $java http://127.0.0.1:6001 --mode read --read-kind uri --population 1000 --skip-preload --id-prefix $prefix"
    "java-local add $java http://127.0.0.1:6001 --mode write --population 10000 --id-prefix $writes"
    "etcd-3 add $etcd $e --etcd --mode write --population 10000 --id-prefix $writes"
    "gridraft-3-spread get $gr $GR_URLS --mode read --read-kind full --population 1000 --skip-preload --id-prefix $prefix"
    "gridraft-3-spread add $gr $GR_URLS --mode write --population 10000 --id-prefix $writes"
    "ceiling-3-spread get $ceiling $CEILING_URLS --mode read --read-kind full --population 1000 --skip-preload --id-prefix $prefix"
  )
  for u in http://127.0.0.1:6001 "$GR_URLS"; do
    "$BENCH" --url "$u" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" >/dev/null
  done
  # Round 0 warms every cell up (Java's JIT above all) and is not recorded.
  for i in $(seq 0 "$RUNS"); do
    for cell in "${cells[@]}"; do
      read -r -a c <<< "$cell"
      local json=() warm="$WARM"
      [ "$i" = 0 ] && warm=$((WARM + FIRST_WARM)) || json=(--json "$RESULTS/${c[0]}.${c[1]}.$i.json")
      "$BENCH" --url "${c[3]}" --concurrency "$CONC" --duration "$DUR" --warmup "$warm" \
        --label "${c[0]}/${c[1]}" --server-pids "${c[2]}" "${json[@]}" \
        "${c[@]:4}" >&2 || true
    done
  done
  stop_all
  python3 "$ROOT/scripts/bench_report.py" targets "$RESULTS" "$ROOT/docs/benchmarks.md" \
    "scripts/bench.sh targets (BENCH_RUNS=$RUNS BENCH_DURATION=$DUR BENCH_CONCURRENCY=$CONC BENCH_FIRST_WARMUP=$FIRST_WARM BENCH_MEMBER_THREADS=$MEMBER_THREADS)"
}

# The four standard workloads against one SessionMap URL list.
bench_sessionmap() {
  local system="$1" urls="$2" prefix="pre$RANDOM$RANDOM"
  # JIT and connection warm-up, not measured.
  "$BENCH" --url "$urls" --concurrency "$CONC" --duration 3 --warmup 0 --mode mix >/dev/null 2>&1 || true
  "$BENCH" --url "$urls" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" >/dev/null
  bench "$system" get "$urls" --mode read --read-kind full --population 1000 --skip-preload --id-prefix "$prefix"
  bench "$system" uri "$urls" --mode read --read-kind uri --population 1000 --skip-preload --id-prefix "$prefix"
  bench "$system" add "$urls" --mode write --population 10000
  bench "$system" mix "$urls" --mode mix --gets 20
}

# The machine's ceiling for a full GET: gridraft-bench's constant-answer server
# (`--mode ceiling-server`) on three free ports, each port on its own runtime with a member's
# threads (BENCH_MEMBER_THREADS; at 0 one per core), answering every full GET with gridraft's
# answer for the session asked (same bytes and headers, the id spliced in) and doing nothing else.
# start_ceiling leaves its URLs in CEILING_URLS.
start_ceiling() {
  local ports listen="" threads="$MEMBER_THREADS" p
  [ "$threads" -gt 0 ] || threads="$(nproc)"
  read -r -a ports <<< "$(free_ports 3)"
  [ "${#ports[@]}" = 3 ] || { log "ceiling: no free ports"; return 1; }
  CEILING_URLS=""
  for p in "${ports[@]}"; do
    listen+="${listen:+,}127.0.0.1:$p"
    CEILING_URLS+="${CEILING_URLS:+,}http://127.0.0.1:$p"
  done
  spawn "$WORK/ceiling.log" "$BENCH" --mode ceiling-server --listen "$listen" --threads "$threads"
  add_server_pid "$LAST_PID"
  for p in "${ports[@]}"; do wait_for "http://127.0.0.1:$p/readyz" 204 30; done
}

# Measured with gridraft x3 spread's full-GET workload; recorded as ceiling-3-spread.
bench_ceiling() {
  start_ceiling
  # Nothing to load (any id is answered), but ids of bench_sessionmap's form: answers of its size.
  bench ceiling-3-spread get "$CEILING_URLS" --mode read --read-kind full --population 1000 \
    --skip-preload --id-prefix "pre$RANDOM$RANDOM"
  stop_all
}

# --- the systems ---------------------------------------------------------------------------
start_java_local() {
  spawn "$WORK/java-local.log" java -jar "$JAR" sessions --host 127.0.0.1 --port 6001 \
    --publish-events tcp://127.0.0.1:44421 --subscribe-events tcp://127.0.0.1:44431 --bind-bus true
  JAVA_PID=$LAST_PID
  add_server_pid "$LAST_PID"
  wait_for http://127.0.0.1:6001/readyz 204 120
}

start_java_redis() {
  rm -f "$WORK/dump.rdb"
  spawn "$WORK/redis.log" redis-server --bind 127.0.0.1 --port 6380 --save "" --appendonly no --dir "$WORK"
  add_server_pid "$LAST_PID"
  for _ in $(seq 1 100); do redis-cli -p 6380 ping >/dev/null 2>&1 && break; sleep 0.05; done
  spawn "$WORK/java-redis.log" java -jar "$JAR" sessions --host 127.0.0.1 --port 6002 \
    --publish-events tcp://127.0.0.1:44422 --subscribe-events tcp://127.0.0.1:44432 --bind-bus true \
    --sessions-implementation org.openqa.selenium.grid.sessionmap.redis.RedisBackedSessionMap \
    --sessions-scheme redis --sessions-host 127.0.0.1 --sessions-port 6380
  add_server_pid "$LAST_PID"
  wait_for http://127.0.0.1:6002/readyz 204 120
}

start_etcd() {
  local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
  for i in 1 2 3; do
    rm -rf "$WORK/etcd$i"
    local env=()
    [ "$MEMBER_THREADS" -gt 0 ] && env=(env "GOMAXPROCS=$MEMBER_THREADS")
    spawn "$WORK/etcd$i.log" "${env[@]}" etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token gridraft-bench \
      --quota-backend-bytes 8589934592 --auto-compaction-mode revision --auto-compaction-retention 1000 \
      --log-level error
    add_server_pid "$LAST_PID"
  done
  for i in 1 2 3; do wait_for "http://127.0.0.1:2379$i/health" 200 60; done
}

# start_gridraft NAME COUNT [EXTRA ARGS...]; members on 127.0.0.1:61N1.. (public), 62N1.. (peer)
start_gridraft() {
  local name="$1" n="$2"; shift 2
  local base="${GR_BASE:-61}" members="" urls="" i
  for i in $(seq 1 "$n"); do
    members+="${members:+,}$i=127.0.0.1:$((base + 1))0$i"
    urls+="${urls:+,}http://127.0.0.1:${base}0$i"
  done
  GR_PIDS=() SERVER_PIDS=""
  for i in $(seq 1 "$n"); do
    rm -rf "$WORK/$name-$i"
    local member_args=()
    [ "$n" -gt 1 ] && member_args=(--members "$members")
    [ "$n" -gt 1 ] && [ "$MEMBER_THREADS" -gt 0 ] && member_args+=(--worker-threads "$MEMBER_THREADS")
    spawn "$WORK/$name-$i.log" "$GR" serve --id "$i" --listen "127.0.0.1:${base}0$i" \
      --peer-listen "127.0.0.1:$((base + 1))0$i" --data-dir "$WORK/$name-$i" \
      --cluster-secret-file "$SECRET_FILE" "${member_args[@]}" "$@"
    GR_PIDS+=("$LAST_PID")
    add_server_pid "$LAST_PID"
  done
  for i in $(seq 1 "$n"); do wait_for "${GR_SCHEME:-http}://127.0.0.1:${base}0$i/readyz" 204 60; done
  GR_URLS="${urls//http:/${GR_SCHEME:-http}:}"
  # Which member leads, from each member's own metrics. The page is read whole before it is
  # searched: `curl | grep -q` under pipefail fails whenever grep stops reading before curl has
  # written the rest of the page (curl then exits 23), which took the leader for a follower.
  local page tries
  GR_LEADER="" GR_FOLLOWER="" GR_LEADER_PID=""
  for tries in $(seq 1 100); do
    GR_LEADER="" GR_FOLLOWER=""
    for i in $(seq 1 "$n"); do
      page="$(curl -s "${PEER_CURL[@]}" -H "Authorization: Bearer $SECRET" \
        "${PEER_SCHEME:-http}://127.0.0.1:$((base + 1))0$i/metrics" || true)"
      if grep -q '^gridraft_raft_is_leader 1' <<< "$page"; then
        GR_LEADER="http://127.0.0.1:${base}0$i" GR_LEADER_PID="${GR_PIDS[$((i - 1))]}"
      else
        GR_FOLLOWER="http://127.0.0.1:${base}0$i"
      fi
    done
    [ -n "$GR_LEADER" ] && break
    sleep 0.1
  done
  [ -n "$GR_LEADER" ] || { log "$name: no member says it leads"; return 1; }
  [ -n "$GR_FOLLOWER" ] || GR_FOLLOWER="$GR_LEADER"
  GR_LEADER="${GR_LEADER//http:/${GR_SCHEME:-http}:}"
  GR_FOLLOWER="${GR_FOLLOWER//http:/${GR_SCHEME:-http}:}"
  log "$name: leader $GR_LEADER, a follower $GR_FOLLOWER"
}

machine_json() {
  python3 - "$RESULTS/machine.json" <<'EOF'
import json, os, sys, subprocess
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
json.dump({"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 1048576, 1),
           "kernel": os.uname().release, "loadavg_start": open("/proc/loadavg").read().split()[:3],
           "java": subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0],
           "etcd": subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]},
          open(sys.argv[1], "w"))
EOF
}

compare() {
  rm -f "$RESULTS"/*.json
  machine_json
  log "Java LocalSessionMap"
  start_java_local; bench_sessionmap java-local http://127.0.0.1:6001; stop_all
  log "Java RedisBackedSessionMap"
  start_java_redis; bench_sessionmap java-redis http://127.0.0.1:6002; stop_all
  log "etcd x3"
  start_etcd
  local e="http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793"
  "$BENCH" --etcd --url "$e" --concurrency "$CONC" --duration 3 --warmup 0 --mode mix >/dev/null 2>&1 || true
  local prefix="pre$RANDOM"
  "$BENCH" --etcd --url "$e" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" >/dev/null
  bench etcd-3 get "$e" --etcd --mode read --population 1000 --skip-preload --id-prefix "$prefix"
  bench etcd-3 add "$e" --etcd --mode write --population 10000
  bench etcd-3 mix "$e" --etcd --mode mix --gets 20
  stop_all
  log "gridraft x1"
  start_gridraft gr1 1; bench_sessionmap gridraft-1 "$GR_URLS"; stop_all
  log "gridraft x3, read mode follower"
  start_gridraft gr3 3
  bench_sessionmap gridraft-3-spread "$GR_URLS"
  bench_sessionmap gridraft-3-follower "$GR_FOLLOWER"
  bench_sessionmap gridraft-3-leader "$GR_LEADER"
  stop_all
  log "ceiling x3 (constant answer)"
  bench_ceiling
  log "gridraft x3, read mode leader"
  start_gridraft gr3l 3 --read-mode leader
  bench_sessionmap gridraft-3-readleader-spread "$GR_URLS"
  bench_sessionmap gridraft-3-readleader-follower "$GR_FOLLOWER"
  stop_all
  python3 "$ROOT/scripts/bench_report.py" compare "$RESULTS" "$ROOT/docs/benchmarks.md" \
    "scripts/bench.sh (BENCH_RUNS=$RUNS BENCH_DURATION=$DUR BENCH_CONCURRENCY=$CONC BENCH_FIRST_WARMUP=$FIRST_WARM BENCH_MEMBER_THREADS=$MEMBER_THREADS)"
}

# --- scale ---------------------------------------------------------------------------------
# start_timed LOG URL CMD...: starts CMD, prints "PID MILLISECONDS" once URL/readyz answers 204
# (the clock starts just before the process is spawned, polled every millisecond).
start_timed() {
  python3 - "$@" <<'EOF'
import http.client, subprocess, sys, time
log, url, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
host, port = url.split("//")[1].split(":")
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
while True:
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=1); c.request("GET", "/readyz")
        if c.getresponse().status == 204: break
    except OSError: pass
    time.sleep(0.001)
print(p.pid, round((time.monotonic() - t0) * 1000, 1))
EOF
}

scale() {
  rm -f "$RESULTS"/scale.*.json
  machine_json
  local url=http://127.0.0.1:6501 peer=127.0.0.1:6601 dir="$WORK/scale-1" prefix="scale$RANDOM" loaded=0
  local start_args=(serve --id 1 --listen 127.0.0.1:6501 --peer-listen "$peer" --data-dir "$dir"
    --cluster-secret-file "$SECRET_FILE")
  # Start-to-ready of an empty member (median of three).
  local readies=()
  for _ in 1 2 3; do
    rm -rf "$dir"
    read -r pid ms < <(start_timed "$WORK/scale.log" "$url" "$GR" "${start_args[@]}")
    PIDS+=("$pid"); readies+=("$ms")
    stop_all
  done
  rm -rf "$dir"
  spawn "$WORK/scale.log" "$GR" "${start_args[@]}"; local pid=$LAST_PID
  wait_for "$url/readyz" 204 60
  local rss0; rss0="$(rss_kb "$pid")"
  local out="$RESULTS/scale.json"
  echo "{\"ready_empty_ms\": [$(IFS=,; echo "${readies[*]}")], \"rss_empty_kb\": $rss0, \"levels\": [" > "$out"
  local first=1
  for n in 1000 100000 1000000; do
    [ "$n" -le "$SCALE_MAX" ] || break
    local t0; t0="$(date +%s.%N)"
    # Load the sessions n-loaded .. n-1 (ids continue from the previous level).
    "$BENCH" --url "$url" --concurrency "$CONC" --mode preload --population "$n" --id-prefix "$prefix" \
      --json "$RESULTS/scale.preload.$n.json" --skip-to "$loaded" >&2
    loaded="$n"
    local settled; settled="$(settle "$pid")"
    log "scale: $n sessions loaded; background work (snapshot) done after $settled ms"
    local rss; rss="$(rss_kb "$pid")"
    local disk; disk="$(du -sk "$dir" | cut -f1)"
    for i in $(seq 1 "$RUNS"); do
      "$BENCH" --url "$url" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM" --mode read \
        --population "$n" --skip-preload --id-prefix "$prefix" --label "scale/$n" \
        --json "$RESULTS/scale.get.$n.$i.json" >&2 || true
    done
    [ $first = 1 ] || echo "," >> "$out"; first=0
    echo "{\"sessions\": $n, \"rss_kb\": $rss, \"disk_kb\": $disk, \"settle_ms\": $settled}" >> "$out"
  done
  echo "]," >> "$out"
  # Restart of a member holding the largest population: to ready, and to the first answered read.
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local t0; t0="$(date +%s%N)"
  local restart_ready; read -r pid restart_ready < <(start_timed "$WORK/scale-restart.log" "$url" "$GR" "${start_args[@]}")
  PIDS+=("$pid")
  curl -s -o /dev/null --max-time 60 "$url/se/grid/session/$prefix-p$((loaded - 1))"
  local restart_read=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "\"restart\": {\"sessions\": $loaded, \"ready_ms\": $restart_ready, \"first_read_ms\": $restart_read}," >> "$out"
  stop_all

  # Churn: sessions added and removed on a fresh member; memory and disk sampled as it goes.
  rm -rf "$dir"
  spawn "$WORK/scale.log" "$GR" "${start_args[@]}"; pid=$LAST_PID
  wait_for "$url/readyz" 204 60
  echo "\"churn\": [" >> "$out"
  local done_sessions=0 step=$((CHURN_SESSIONS / 10)) firstc=1
  while [ "$done_sessions" -lt "$CHURN_SESSIONS" ]; do
    "$BENCH" --url "$url" --concurrency "$CONC" --mode churn --population "$step" \
      --json "$RESULTS/scale.churn.json" >&2 || true
    done_sessions=$((done_sessions + step))
    [ $firstc = 1 ] || echo "," >> "$out"; firstc=0
    echo "{\"sessions\": $done_sessions, \"rss_kb\": $(rss_kb "$pid"), \"disk_kb\": $(du -sk "$dir" | cut -f1)}" >> "$out"
  done
  echo "]," >> "$out"
  stop_all

  # The Java map's memory per session: RSS after a full GC, empty and with sessions loaded.
  start_java_local
  local jn="${JAVA_SESSIONS:-100000}"
  jcmd "$JAVA_PID" GC.run >/dev/null 2>&1 || true; sleep 1
  local j0; j0="$(rss_kb "$JAVA_PID")"
  "$BENCH" --url http://127.0.0.1:6001 --concurrency "$CONC" --mode preload --population "$jn" >&2
  jcmd "$JAVA_PID" GC.run >/dev/null 2>&1 || true; sleep 1
  local j1; j1="$(rss_kb "$JAVA_PID")"
  echo "\"java\": {\"sessions\": $jn, \"rss_empty_kb\": $j0, \"rss_kb\": $j1}}" >> "$out"
  stop_all
  python3 "$ROOT/scripts/bench_report.py" scale "$RESULTS" "$ROOT/docs/benchmarks.md" \
    "scripts/bench.sh scale (BENCH_RUNS=$RUNS BENCH_DURATION=$DUR SCALE_MAX=$SCALE_MAX CHURN_SESSIONS=$CHURN_SESSIONS)"
}

# Churn only, at any size (CHURN_SESSIONS; 10 million takes about 35 minutes here): one fresh
# member, sessions added and removed through it, RSS and disk sampled every twentieth of the way.
# Prints a table; the samples stay in $RESULTS/churn-only.txt.
churn_only() {
  local url=http://127.0.0.1:6502 dir="$WORK/churn-1" out="$RESULTS/churn-only.txt"
  rm -rf "$dir"
  spawn "$WORK/churn.log" "$GR" serve --id 1 --listen 127.0.0.1:6502 --peer-listen 127.0.0.1:6602 \
    --data-dir "$dir" --cluster-secret-file "$SECRET_FILE"
  local pid=$LAST_PID
  wait_for "$url/readyz" 204 60
  local step=$((CHURN_SESSIONS / 20)) done_sessions=0 t0 errors=0 n
  t0="$(date +%s)"
  printf '%12s %9s %10s %8s %7s\n' churned rss_MiB disk_MiB seconds errors | tee "$out"
  while [ "$done_sessions" -lt "$CHURN_SESSIONS" ]; do
    n="$("$BENCH" --url "$url" --concurrency "$CONC" --mode churn --population "$step" 2>&1 \
      | sed -n 's/^preload: .*, \([0-9]*\) errors$/\1/p')"
    errors=$((errors + ${n:-1}))
    done_sessions=$((done_sessions + step))
    printf '%12d %9d %10d %8d %7d\n' "$done_sessions" $(( $(rss_kb "$pid") / 1024 )) \
      $(( $(du -sk "$dir" | cut -f1) / 1024 )) $(( $(date +%s) - t0 )) "$errors" | tee -a "$out"
  done
  stop_all
}

gridraft_only() {
  rm -f "$RESULTS"/gridraft-*.json "$RESULTS"/ceiling-*.json
  start_gridraft gr1 1; bench_sessionmap gridraft-1 "$GR_URLS"; stop_all
  start_gridraft gr3 3; bench_sessionmap gridraft-3-spread "$GR_URLS"; stop_all
  bench_ceiling
  python3 "$ROOT/scripts/bench_report.py" summary "$RESULTS" - -
}

# The arguments of gridraft-bench for WORKLOAD (get: full GETs of the 1 000 sessions preloaded
# under PREFIX; add: adds of 10 000 sessions under PREFIX-w, the same ones in every run, so that
# each run measures a map of one size) into the array WORKLOAD_ARGS.
workload_args() {
  WORKLOAD_ARGS=(--mode write --population 10000 --id-prefix "$2-w")
  [ "$1" = get ] && WORKLOAD_ARGS=(--mode read --read-kind full --population 1000 --skip-preload --id-prefix "$2")
  return 0
}

# Server CPU per request of a three-member cluster (all three members together, measured by
# gridraft-bench over each run's measured seconds): full GET and add spread over the members,
# RUNS runs each.
cpu_per_request() {
  start_gridraft gr3 3
  local prefix="cpu$RANDOM$RANDOM"
  "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --duration 3 --warmup 0 --mode mix >/dev/null 2>&1 || true
  "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" >/dev/null
  for workload in get add; do
    workload_args "$workload" "$prefix"
    for i in $(seq 1 "$RUNS"); do
      "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --duration "$DUR" --warmup 0 \
        --server-pids "$SERVER_PIDS" --json "$RESULTS/cpu.$workload.$i.json" "${WORKLOAD_ARGS[@]}" >/dev/null 2>&1
      python3 - "$RESULTS/cpu.$workload.$i.json" "$workload" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
total, cpu = report["total"], report.get("server_cpu") or {}
print(f"gridraft x3 spread {sys.argv[2]:4} {total['rps']:9,.0f} req/s  p99 {total['p99_ms']:6.2f} ms  "
      f"server CPU {cpu.get('seconds', float('nan')):5.1f} s  "
      f"{cpu.get('us_per_request', float('nan')):6.1f} us per request")
PY
    done
  done
  stop_all
}

# Where the members' CPU goes: `perf record` with DWARF call graphs of the three members of a
# three-member cluster for DUR seconds of x3 spread full GETs, then of adds, each sample counted
# in the phase of the request path it falls in (scripts/profile_phases.py), leader and followers
# apart, with the server CPU per request of the same seconds. Needs perf (Debian: linux-perf).
profile_phases() {
  command -v perf >/dev/null || { log "profile: perf not found (Debian package linux-perf)"; return 1; }
  start_gridraft gr3 3
  local prefix="prof$RANDOM$RANDOM" workload bench_pid us
  "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" >/dev/null
  for workload in get add; do
    workload_args "$workload" "$prefix"
    # The recording starts after the load's second of warm-up and lasts its measured seconds.
    "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --duration "$DUR" --warmup 1 \
      --server-pids "$SERVER_PIDS" "${WORKLOAD_ARGS[@]}" > "$WORK/profile.$workload.txt" 2>&1 &
    bench_pid=$!
    sleep 1
    perf record -F 299 --call-graph dwarf,32768 -o "$WORK/perf.$workload.data" -p "$SERVER_PIDS" \
      -- sleep "$DUR" >/dev/null 2>&1
    wait "$bench_pid" || true
    echo "== gridraft x3 spread $workload"
    grep -E '^total|server CPU' "$WORK/profile.$workload.txt"
    us="$(sed -n 's/.*, \([0-9.]*\) us per request.*/\1/p' "$WORK/profile.$workload.txt" | head -1)"
    perf script -F pid,tid,comm,ip,sym -i "$WORK/perf.$workload.data" 2>/dev/null |
      python3 "$ROOT/scripts/profile_phases.py" --leader "$GR_LEADER_PID" ${us:+--us-per-request "$us"}
  done
  stop_all
}

# What one snapshot costs: a fresh member with snapshots by size and by count switched off,
# SNAPSHOT_SESSIONS sessions loaded, then stopped (a stop takes a snapshot first). The CPU from the
# stop to its exit is the member's whole rusage (wait4) less its CPU before the stop; the shutdown
# around the snapshot is the same in every build. RUNS runs.
snapshot_cost() {
  local dir="$WORK/snapshot-1" url=http://127.0.0.1:6503 run
  for run in $(seq 1 "$RUNS"); do
    rm -rf "$dir"
    python3 - "$GR" "$BENCH" "$dir" "$url" "$SNAPSHOT_SESSIONS" "$CONC" "$SECRET_FILE" "$WORK/snapshot.log" <<'PY'
import os, signal, subprocess, sys, time, urllib.request
gr, bench, data, url, n, conc, secret, log = sys.argv[1:]
member = subprocess.Popen(
    [gr, "serve", "--id", "1", "--listen", url.removeprefix("http://"), "--peer-listen", "127.0.0.1:6603",
     "--data-dir", data, "--cluster-secret-file", secret,
     "--snapshot-after-bytes", "0", "--snapshot-after-entries", "1000000000"],
    stdout=open(log, "ab"), stderr=subprocess.STDOUT)
for _ in range(300):
    try:
        if urllib.request.urlopen(url + "/readyz").status == 204:
            break
    except OSError:
        time.sleep(0.1)
subprocess.run([bench, "--url", url, "--concurrency", conc, "--mode", "preload", "--population", n],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
hz = os.sysconf("SC_CLK_TCK")
fields = open(f"/proc/{member.pid}/stat").read().rsplit(")", 1)[1].split()
before_user, before_sys = int(fields[11]) / hz, int(fields[12]) / hz
t0 = time.monotonic()
member.send_signal(signal.SIGTERM)
_, status, usage = os.wait4(member.pid, 0)
wall = time.monotonic() - t0
snaps = os.path.join(data, "snapshots")
size = sum(os.path.getsize(os.path.join(snaps, f)) for f in os.listdir(snaps))
user, system = usage.ru_utime - before_user, usage.ru_stime - before_sys
print(f"snapshot of {int(n):,} sessions, {size / 1e6:.1f} MB: user {user * 1e3:.0f} ms  system {system * 1e3:.0f} ms  "
      f"total {(user + system) * 1e3:.0f} ms ({(user + system) * 1e3 / (size / 1e6):.2f} ms per MB)  "
      f"stop {wall:.2f} s  exit {status >> 8}")
PY
  done
  rm -rf "$dir"
}

# What TLS costs: a three-member cluster plain (http), with HTTPS on the public port (https), and
# with mutual TLS on the peer port too (both: --peer-tls-*; a CA and one certificate for
# 127.0.0.1 made with openssl), alternating RUNS times; full GET and add spread over the members;
# medians, server CPU per request and the ratios to plain printed.
tls_cost() {
  local dir="$WORK/tls" run mode
  mkdir -p "$dir"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=bench CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req "${ec[@]}" -subj "/CN=bench member" -keyout "$dir/member.key" -out "$dir/member.csr" 2>/dev/null
  openssl x509 -req -in "$dir/member.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth') -out "$dir/member.crt" 2>/dev/null
  local public_tls=(--tls-cert-file "$dir/member.crt" --tls-key-file "$dir/member.key")
  local peer_tls=(--peer-tls-cert-file "$dir/member.crt" --peer-tls-key-file "$dir/member.key"
                  --peer-tls-ca-file "$dir/ca.crt")
  rm -f "$RESULTS"/tls-*.json
  for run in $(seq 1 "$RUNS"); do
    for mode in http https both; do
      case "$mode" in
        http) start_gridraft "gr3$mode" 3 ;;
        https) GR_SCHEME=https CURL_CA="$dir/ca.crt" start_gridraft "gr3$mode" 3 "${public_tls[@]}" ;;
        both)
          PEER_SCHEME=https PEER_CURL=(--cacert "$dir/ca.crt" --cert "$dir/member.crt" --key "$dir/member.key")
          GR_SCHEME=https CURL_CA="$dir/ca.crt" start_gridraft "gr3$mode" 3 "${public_tls[@]}" "${peer_tls[@]}"
          PEER_SCHEME=http PEER_CURL=()
          ;;
      esac
      local prefix="tls$RANDOM$RANDOM" tls_args=()
      [ "$mode" != http ] && tls_args=(--ca-file "$dir/ca.crt")
      "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --duration 3 --warmup 0 --mode mix "${tls_args[@]}" >/dev/null 2>&1 || true
      "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --mode preload --population 1000 --id-prefix "$prefix" "${tls_args[@]}" >/dev/null
      local w w_args
      for w in get add; do
        case "$w" in
          get) w_args=(--mode read --read-kind full --population 1000 --skip-preload --id-prefix "$prefix") ;;
          add) w_args=(--mode write --population 10000) ;;
        esac
        "$BENCH" --url "$GR_URLS" --concurrency "$CONC" --duration "$DUR" --warmup 0 "${tls_args[@]}" \
          --server-pids "$SERVER_PIDS" --json "$RESULTS/tls-$mode.$w.$run.json" "${w_args[@]}" >&2 || true
      done
      stop_all
    done
  done
  python3 - "$RESULTS" <<'PY'
import glob, json, statistics, sys
res = sys.argv[1]
med, cpu = {}, {}
for mode in ("http", "https", "both"):
    for w in ("get", "add"):
        files = sorted(glob.glob(f"{res}/tls-{mode}.{w}.*.json"))
        reports = [json.load(open(f)) for f in files]
        runs = [r["total"] for r in reports]
        rps = [r["rps"] for r in runs]
        # Server CPU per request, all three members together: steadier than req/s when the
        # host's speed drifts.
        us = [r["server_cpu"]["us_per_request"] for r in reports if r.get("server_cpu")]
        med[mode, w] = statistics.median(rps) if rps else 0
        cpu[mode, w] = statistics.median(us) if us else 0
        p99 = statistics.median([r["p99_ms"] for r in runs]) if runs else 0
        print(f"gridraft x3 spread {w} over {mode:5}  runs {' / '.join(f'{x:,.0f}' for x in rps)} req/s  "
              f"median {med[mode, w]:,.0f}  p99 {p99:.2f} ms  "
              f"server CPU {' / '.join(f'{x:.1f}' for x in us)} us per request, median {cpu[mode, w]:.1f}")
names = {"https": "HTTPS on the public port", "both": "TLS on both ports"}
for w in ("get", "add"):
    for mode in ("https", "both"):
        if med["http", w]:
            print(f"{w}: {names[mode]} at {med[mode, w] / med['http', w] * 100:.0f} % of plain "
                  f"(costs {(1 - med[mode, w] / med['http', w]) * 100:.0f} %); server CPU per request "
                  f"{cpu[mode, w]:.1f} against {cpu['http', w]:.1f} us ({(cpu[mode, w] / cpu['http', w] - 1) * 100:+.0f} %)")
PY
}

case "$WHAT" in
  compare) compare ;;
  targets) targets ;;
  gridraft) gridraft_only ;;
  cpu) cpu_per_request ;;
  profile) profile_phases ;;
  tls) tls_cost ;;
  snapshot) snapshot_cost ;;
  scale) scale ;;
  churn) churn_only ;;
  all) compare; scale ;;
  *) echo "usage: $0 [compare|targets|scale|all|gridraft|churn|cpu|profile|tls|snapshot]" >&2; exit 2 ;;
esac
