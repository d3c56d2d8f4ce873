#!/usr/bin/env bash
# Checks the monitoring an operator imports (docker/monitoring/; docs/operations.md,
# "Monitoring"): the alert rules load in Prometheus, each alert fires on its unit-test series and
# none fires on a healthy cluster, and every metric the rules and the Grafana dashboard use is one
# a running gridraft member exports (scripts/check_monitoring.py starts one from the binary).
#
#   scripts/check-monitoring.sh [GRIDRAFT_BINARY]    default target/debug/gridraft
#
# Needs promtool (Debian package `prometheus`, in scripts/install-test-deps.sh) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
gridraft="${1:-target/debug/gridraft}"
command -v promtool >/dev/null || { echo "check-monitoring: promtool is missing (apt-get install prometheus)" >&2; exit 1; }
[ -x "$gridraft" ] || { echo "check-monitoring: no gridraft binary at $gridraft (cargo build)" >&2; exit 1; }

# promtool check rules docker/monitoring/gridraft-alerts.yml, promtool test rules
# gridraft-alerts.test.yml, then the metric names; ends with `N passed, M failed`.
exec python3 scripts/check_monitoring.py --gridraft "$gridraft"
