#!/usr/bin/env bash
# Checks the docker-selenium drop-in (docker/selenium/; docs/grid.md, "A drop-in for
# docker-selenium"): the compose file is valid for docker-compose (and `docker compose` where it
# exists) and differs from docker-selenium's only in the session map's image; the gridraft binary
# reads that service's environment as the event bus it names; the Kubernetes manifests and Helm
# values parse and hold a three-member StatefulSet, a headless Service, a PodDisruptionBudget and
# /readyz probes; docs/grid.md shows each file as it is. Takes a few seconds, starts nothing.
#
#   scripts/check-selenium-dropin.sh [GRIDRAFT_BINARY]    default target/debug/gridraft
#
# Needs docker-compose or docker compose, python3 with PyYAML (python3-yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
gridraft="${1:-target/debug/gridraft}"
[ -x "$gridraft" ] || { echo "check-selenium-dropin: no gridraft binary at $gridraft (cargo build)" >&2; exit 1; }
exec python3 scripts/check_selenium_dropin.py --gridraft "$gridraft"
