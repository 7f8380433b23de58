"""Chaos soak: gateway + workers on the real services, steady load, faults, a verdict.

Run (from the repository root, with RabbitMQ, PostgreSQL and Redis on 127.0.0.1):

    uv run python benchmarks/chaos.py --minutes 10            # seeded random schedule
    uv run python benchmarks/chaos.py --minutes 1 --fixed     # what CI runs (every fault once)
    uv run python benchmarks/chaos.py --recheck LOGDIR/history.json   # judge a run again

`mas api` and 3 `mas worker` processes reach the services through TCP fault proxies run by
this process; tasks go in over HTTP at a steady rate while the schedule kills (-9) and stops
(SIGTERM) workers and the gateway, cuts and blackholes the broker, and takes PostgreSQL and
Redis away. Afterwards the checker reads the database and judges: nothing the gateway
accepted lost, nothing left pending, no handler effect repeated except in the documented
kill -9 window. The harness lives in tests/soak/ (harness.py; the checker's definitions are
in checker.py's docstring) and is shared with the 60 s CI test
(tests/integration/test_chaos_soak.py).

JSON goes to stdout and benchmarks/results/chaos.json; progress and the summary go to
stderr. The exit status is 1 when the verdict is FAILED.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_FILE = HERE / "results" / "chaos.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks submitted per second")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1, help="seeds the schedule and the client")
    parser.add_argument(
        "--fixed", action="store_true", help="every fault kind once, in a set order (as CI)"
    )
    parser.add_argument("--quiet-deadline", type=float, default=120.0, help="seconds after load")
    parser.add_argument("--logdir", type=Path, default=None, help="process logs (default: temp)")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    parser.add_argument(
        "--recheck", type=Path, default=None, help="judge a run's history.json again, no run"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # the harness is in tests/soak, shared with the CI test
    from tests.soak.checker import History
    from tests.soak.harness import SoakConfig, render, run_soak
    from tests.soak.schedule import fixed_schedule, random_schedule

    if args.recheck is not None:
        report = History.from_json(args.recheck.read_text()).judge()
        print(json.dumps(report, indent=2))
        print("\n" + render(report), file=sys.stderr)
        return 0 if report["verdict"]["passed"] else 1

    seconds = args.minutes * 60
    schedule = (
        fixed_schedule(seconds, args.workers)
        if args.fixed
        else random_schedule(seconds, args.workers, args.seed)
    )
    config = SoakConfig(
        load_seconds=seconds,
        rate=args.rate,
        workers=args.workers,
        schedule=schedule,
        seed=args.seed,
        quiet_deadline=args.quiet_deadline,
        logdir=args.logdir,
    )
    try:
        report = anyio.run(run_soak, config)
    except KeyboardInterrupt:  # the harness has stopped its processes and cleaned up
        print("interrupted: processes stopped, schema, queues and keys deleted", file=sys.stderr)
        return 130
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    print("\n" + render(report) + f"\n\nJSON written to {args.out}", file=sys.stderr)
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
