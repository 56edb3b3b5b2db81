"""Run one peer in this process and print its result as one JSON line (used by bench_peers).

    python -m benchmarks.peers NAME CAPTURE [--rules PACK.yaml ...] [--slice-packets N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from benchmarks.peers import Job

MODULES = {
    "hyperscan-limit": "benchmarks.peers.hyperscan_limit",
    "re": "benchmarks.peers.python_re",
    "dpkt-hyperscan": "benchmarks.peers.dpkt_hyperscan",
    "scapy-re": "benchmarks.peers.scapy_re",
    "pyshark-re": "benchmarks.peers.pyshark_re",
    "nfstream": "benchmarks.peers.nfstream_meter",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(MODULES))
    parser.add_argument("capture")
    parser.add_argument("--rules", action="append", default=[], metavar="PACK.yaml")
    parser.add_argument("--slice-packets", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    module = importlib.import_module(MODULES[args.name])
    result = module.run(Job(args.capture, tuple(args.rules), args.slice_packets))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
