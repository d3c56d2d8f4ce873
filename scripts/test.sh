#!/usr/bin/env bash
# gridraft's whole test suite, from nothing on a Debian 12 machine with Rust and Docker:
# installs the packages the tests need, starts real PostgreSQL and Redis on 127.0.0.1, checks
# formatting and clippy lints (warnings are errors), runs
# every cargo test (unit, storage suite, routes, differential against the real Java server,
# in-process clusters, event bus, mirrors), the monitoring check (alert rules and dashboard
# against a running member), the status page in headless Chromium, the real Selenium Grid end
# to end with a leader
# kill, the fault tier (full disk, slow clients, big requests, an idle leader, a late duplicate
# event against real processes behind haproxy) and the docker compose failover suite in its
# quick mode, plain and then with TLS on.
#
#   scripts/test.sh            everything
#   SKIP_HARDENING=1 scripts/test.sh  everything but the fault tier
#   SKIP_FAILOVER=1 scripts/test.sh   everything but the docker compose failover suites
#   SKIP_MONITORING=1 scripts/test.sh everything but the monitoring check
set -euo pipefail
# A test whose dependency (Java, the jar, PostgreSQL, Redis) is missing fails here, never skips.
export GRIDRAFT_TEST_REQUIRE_ALL=1
cd "$(dirname "$0")/.."
repo="$(pwd)"
export GRIDRAFT_SELENIUM_JAR="${GRIDRAFT_SELENIUM_JAR:-$(cd "$repo/.." && pwd)/shared/selenium/selenium-server-4.48.0.jar}"
[ -f "$GRIDRAFT_SELENIUM_JAR" ] || { echo "test.sh: no Selenium jar at $GRIDRAFT_SELENIUM_JAR" >&2; exit 1; }

section() { printf '\n==== %s ====\n' "$*"; }

# A one-shot build keeps no incremental caches (a fifth of a debug build's disk).
export CARGO_INCREMENTAL=0
# The whole run needs about 6 GB: the debug build, the release build the images are made from,
# the previous release's build and the images. A build that runs out of disk fails in the
# linker with a bus error, so say what there was.
disk_report() { df -h "$repo" /var/lib/docker 2>/dev/null | awk 'NR == 1 || !seen[$1]++' || true; }
section "free disk"
disk_report
trap 'status=$?; if [ "$status" -ne 0 ]; then section "free disk at the failure"; disk_report; fi' EXIT

section "installing test dependencies"
scripts/install-test-deps.sh
section "starting PostgreSQL and Redis"
eval "$(scripts/start-test-services.sh)"

section "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

section "cargo test"
cargo build --locked --all-targets
cargo test --locked --all-targets --no-fail-fast -- --test-threads="${GRIDRAFT_TEST_THREADS:-2}"

if [ -z "${SKIP_MONITORING:-}" ]; then
  section "monitoring: alert rules, their unit tests, metric names against a running member"
  scripts/check-monitoring.sh target/debug/gridraft
fi

section "the status page /ui in headless Chromium, with a member killed"
python3 cluster-tests/status_page.py --gridraft target/debug/gridraft

section "docker-selenium drop-in: compose file, Kubernetes manifests, SE_* variables"
scripts/check-selenium-dropin.sh target/debug/gridraft

section "a real Selenium Grid on a three-member gridraft, with a leader kill"
python3 cluster-tests/grid_e2e.py --gridraft target/debug/gridraft
section "the same Grid over TLS: HTTPS to the session map, mutual TLS between members, certificates renewed under load"
python3 cluster-tests/grid_e2e.py --gridraft target/debug/gridraft --tls

section "the reconciler on a real Selenium Grid: a killed node, a lost session event, a long session"
python3 cluster-tests/grid_reconcile.py --gridraft target/debug/gridraft

section "a rolling upgrade from the release before peer streams to this build, under load"
python3 cluster-tests/rolling_upgrade.py --gridraft target/debug/gridraft --previous "$(scripts/build-previous.sh)"
if [ -z "${SKIP_HARDENING:-}" ]; then
  section "the fault tier: full disk, slow clients, big requests, idle leader, late duplicate event"
  python3 cluster-tests/hardening.py --gridraft target/debug/gridraft
fi

if [ -z "${SKIP_FAILOVER:-}" ] && [ -x cluster-tests/run.sh ]; then
  section "docker compose failover suite (quick)"
  cluster-tests/run.sh
  # Every round again (about as long as the plain run): the images it just built, with
  # docker/compose.tls.yaml and certificates from docker/make-certs.sh.
  section "docker compose failover suite (quick) with TLS: HTTPS through the VIP, mutual TLS between members"
  SKIP_IMAGE_BUILD=1 cluster-tests/run.sh --tls
fi
section "all test stages passed"
