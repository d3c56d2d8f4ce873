#!/usr/bin/env bash
# Installs, from Debian's packages, everything the test suite needs that a fresh Debian 12
# machine with Rust and Docker lacks: a Java 17 runtime (the real Selenium server), PostgreSQL,
# Redis, haproxy, Chromium and its driver (the real Grid end to end), debootstrap (local images),
# promtool (the monitoring check), openssl and curl (certificates and checks of the HTTPS tier).
# Idempotent: installs only what is missing.
set -euo pipefail
log() { echo "install-test-deps: $*" >&2; }

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || need+=(haproxy)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v promtool >/dev/null || need+=(prometheus)
command -v python3 >/dev/null || need+=(python3)
command -v c++ >/dev/null || need+=(g++)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)

if [ "${#need[@]}" -eq 0 ]; then
  log "everything is installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "missing ${need[*]}; run as root (apt-get) or install them"
  exit 1
fi
log "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
