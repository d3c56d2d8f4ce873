#!/usr/bin/env bash
# Certificates for trying the compose cluster with TLS (docker/compose.tls.yaml), made with
# openssl only:
#
#   docker/make-certs.sh [DIR]       # DIR defaults to docker/tls (git-ignored)
#   docker compose -f docker/compose.yaml -f docker/compose.tls.yaml up -d
#
# DIR receives:
#   ca.crt, ca.key          a CA of its own (P-256), valid 10 years; compose.tls.yaml mounts
#                           all of DIR, ca.key included (0600, so not readable by the container
#                           users unless DIR belongs to uid 10001): keep DIR private
#   gridraft-N.crt/.key     member N (1..3): DNS:gridraft-N (the VIP's name for it, public port),
#                           DNS:peer-N (the host of its peer address), DNS:localhost and
#                           IP:127.0.0.1 (the health check, `gridraft cluster` in the container);
#                           serverAuth and clientAuth, so one pair serves both ports and is the
#                           member's client certificate towards the other members
#   vip.pem                 haproxy's certificate and key in one file: DNS:gridraft-vip,
#                           DNS:localhost, IP:127.0.0.1
#
# This is for a demo or a test run, not for production: one CA signs both ports (production
# uses a peer CA of its own, see docs/operations.md, "Certificates"), and the members' and the
# VIP's keys are made world-readable (0644) so that the container users (uid 10001 in the
# gridraft image, `haproxy` in the haproxy images) read them from a bind mount without chown
# or root. ca.key stays 0600. Production keys belong to the container user, mode 0600.
#
# Running it again replaces every file, the CA included (for a running cluster that is a change
# of CA all at once: restart it). Each file is written under a temporary name and renamed, so a
# member, which re-reads its certificate files when they change, never reads a half-written one.
# Environment: DAYS (the leaf certificates' validity, default 365).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-$HERE/tls}"
DAYS="${DAYS:-365}"
MEMBERS=(1 2 3)

command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found" >&2; exit 1; }
mkdir -p "$DIR"
chmod 0755 "$DIR"
work="$(mktemp -d "$DIR/.make-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT

ssl() {
  local out
  if ! out="$(openssl "$@" 2>&1)"; then
    echo "make-certs.sh: openssl $1 failed:" >&2
    echo "$out" >&2
    exit 1
  fi
}

# A new P-256 key without a passphrase.
EC_KEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

# The CA. Its extensions are given in full (not taken from the system's openssl.cnf), so that
# strict verifiers (Python 3.13's default context, rustls) accept the chain.
cat >"$work/ca.ext" <<'EOF'
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
EOF
ssl req -new "${EC_KEY[@]}" -subj "/CN=gridraft demo CA" -keyout "$work/ca.key" -out "$work/ca.csr"
ssl x509 -req -in "$work/ca.csr" -signkey "$work/ca.key" -days 3650 -extfile "$work/ca.ext" \
  -out "$work/ca.crt"

# leaf NAME SAN EKU: NAME.key and NAME.crt signed by the CA.
leaf() {
  local name="$1" san="$2" eku="$3"
  cat >"$work/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
  ssl req -new "${EC_KEY[@]}" -subj "/CN=$name" -keyout "$work/$name.key" -out "$work/$name.csr"
  ssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAserial "$work/ca.srl" -CAcreateserial -days "$DAYS" -extfile "$work/$name.ext" \
    -out "$work/$name.crt"
}

for n in "${MEMBERS[@]}"; do
  leaf "gridraft-$n" "DNS:gridraft-$n,DNS:peer-$n,DNS:localhost,IP:127.0.0.1" "serverAuth,clientAuth"
done
leaf vip "DNS:gridraft-vip,DNS:localhost,IP:127.0.0.1" "serverAuth"
cat "$work/vip.crt" "$work/vip.key" >"$work/vip.pem"

for n in "${MEMBERS[@]}"; do
  ssl verify -x509_strict -purpose sslserver -CAfile "$work/ca.crt" "$work/gridraft-$n.crt"
  ssl verify -x509_strict -purpose sslclient -CAfile "$work/ca.crt" "$work/gridraft-$n.crt"
done
ssl verify -x509_strict -purpose sslserver -CAfile "$work/ca.crt" "$work/vip.crt"

# Demo permissions (see the header): certificates and the leaf keys readable by the container
# users, the CA key by its owner only.
chmod 0644 "$work"/*.crt "$work"/*.key "$work/vip.pem"
chmod 0600 "$work/ca.key"

# Certificates before keys: a member that reloads between the two renames sees a pair that
# does not match, logs it and keeps its old pair until the key follows (at most 5 s later).
files=(ca.crt)
for n in "${MEMBERS[@]}"; do files+=("gridraft-$n.crt"); done
files+=(vip.pem)
for n in "${MEMBERS[@]}"; do files+=("gridraft-$n.key"); done
files+=(ca.key)
for f in "${files[@]}"; do
  mv -f "$work/$f" "$DIR/$f"
done

echo "make-certs.sh: CA, members 1-3 and the VIP in $DIR" >&2
