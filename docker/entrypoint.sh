#!/bin/sh
# The image's entrypoint: `gridraft` with the given arguments (default: serve).
#
# Compose files pass optional settings as `GRIDRAFT_X: ${GRIDRAFT_X:-}`, which sets the variable
# to an empty string when the operator did not set it. gridraft reads an empty variable as an
# (invalid) value, so empty GRIDRAFT_* variables are dropped here: empty means "not set".
# docker-selenium's SE_* variables (SE_EVENT_BUS_HOST, ...) are read by gridraft itself, which
# treats empty ones as unset.
set -eu
for name in $(env | sed -n 's/^\(GRIDRAFT_[A-Z0-9_]*\)=$/\1/p'); do
  unset "$name"
done
exec gridraft "$@"
