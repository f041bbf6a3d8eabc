"""``python -m tests.chaos run --profile ci|full --broker B --scenario N [--dir D]``

Prints the run's summary JSON (the checker's, with the run's seconds) and exits 0, 1 on a
violation, 2 on bad input (unknown scenario, scenario 3 without STEM_CHAOS_BROKER_FAULTS=1,
scenario 4 on a broker not reached over TCP), 3 when a broker's server is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from tests.chaos.runner import BROKERS, PROFILES

# Scenario 4 puts a TCP proxy between workers and the broker's host:port.
TCP_BROKERS = ("redis", "postgres", "rabbitmq")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario and check its histories")
    run.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    run.add_argument("--broker", choices=BROKERS, required=True)
    run.add_argument("--scenario", type=int, required=True)
    run.add_argument("--dir", type=Path, default=None, help="where the histories go (default: a new temp dir)")
    opts = parser.parse_args(argv)
    from tests.chaos.runner import run_scenario
    from tests.chaos.scenarios import SCENARIOS

    from tests.chaos.broker_faults import ENABLE_ENV, enabled

    if opts.scenario not in SCENARIOS:
        print(f"error: scenario {opts.scenario} is not built (built: {sorted(SCENARIOS)})", file=sys.stderr)
        return 2
    if opts.scenario == 3 and not enabled():
        print(f"error: scenario 3 restarts brokers: set {ENABLE_ENV}=1 (never against shared servers in use)", file=sys.stderr)
        return 2
    if opts.scenario == 4 and opts.broker not in TCP_BROKERS:
        print(f"error: scenario 4 needs a broker reached over TCP ({', '.join(TCP_BROKERS)})", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(run_scenario(opts.profile, opts.broker, opts.scenario, opts.dir))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(summary))
    return 0 if summary["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
