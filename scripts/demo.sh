#!/usr/bin/env bash
# Install egresswatch on Debian (a virtualenv in .venv) and replay the bundled sample capture.
# The EVE events go to stdout and to samples/out/eve.json.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .

mkdir -p samples/out
.venv/bin/egresswatch replay samples/sample-egress.pcap --eve samples/out/eve.json
cat samples/out/eve.json
