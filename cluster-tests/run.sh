#!/usr/bin/env bash
# The failover suite: builds the local images (scripts/build-local-image.sh), then runs
# cluster-tests/failover.py against docker/compose.yaml. Quick mode (default) runs every fault
# once plus one mixed round; `--soak N` runs N mixed rounds; `--tls` runs with TLS on
# (docker/compose.tls.yaml, certificates from docker/make-certs.sh). Other flags go to
# failover.py (see `python3 cluster-tests/failover.py --help`). Ends with `N passed, M failed`.
#
# Environment: GRIDRAFT_BINARY (use a prebuilt binary, e.g. target/debug/gridraft),
# GRIDRAFT_PROFILE (cargo profile, default release), SKIP_IMAGE_BUILD=1 (use existing images).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

echo "== checker unit tests"
if ! python3 -m unittest discover -s "$HERE" -p 'test_*.py'; then
  echo "0 passed, 1 failed"
  exit 1
fi

if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  echo "== building images"
  "$REPO/scripts/build-local-image.sh"
fi

echo "== failover suite"
exec python3 "$HERE/failover.py" --gridraft-image gridraft:local --haproxy-image gridraft-haproxy:local "$@"
