#!/usr/bin/env bash
# Install everything the test suite needs on Debian (system packages + a virtualenv) and run it.
# Usage: scripts/test.sh [pytest args...]      (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# tshark: the reference for TCP reassembly; tcpdump/libpcap: BPF; iproute2 + tcpreplay: the live
# agent test in network namespaces; rsyslog: the syslog sink test; prometheus: promtool and the
# scrape test; ngrep: a peer in the benchmark smoke test.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip tshark tcpdump \
    iproute2 tcpreplay rsyslog rsyslog-openssl prometheus ngrep strace libcap2-bin util-linux systemd >/dev/null

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    # pytest's "no tests collected": with a path or -k filter that is a mistake worth seeing, not a pass.
    echo "scripts/test.sh: pytest collected no tests" >&2
fi
exit "$status"
