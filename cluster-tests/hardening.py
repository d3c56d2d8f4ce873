#!/usr/bin/env python3
"""The fault tier (issue 14): the faults that take real members down, reproduced against real
`gridraft serve` processes behind Debian's haproxy (checking `GET /readyz`, inter 500ms, fall 2,
rise 2), each asserting the hardened behaviour with measured numbers:

  disk-full             member 3's data directory on a 96 MiB tmpfs fills up under Grid-shaped
                        load through the VIP: it leaves the balancer within 3 s, no lookup fails
                        after that, nothing acknowledged is lost, it stays out while restarted on
                        the full disk and rejoins with every session once space is freed
  slow-clients          a half-sent request is closed within 60 s; 5,000 idle connections delay
                        a lookup by less than 1 s and stop no Raft; a member with 1024 fds
                        flooded with 2,000 connections keeps Raft working
  big-requests          16 MiB, 3 MiB 20-deep and 1.3 MiB-node-URI bodies refused naming the
                        limit, peak RSS +64 MB at most, eight 16 MiB POSTs at once; 220 add+delete
                        pairs with the largest accepted node URI, a snapshot, kill -9 of every
                        member: all start, no segment cut, every acknowledged session present
  idle-leader           both followers killed: the idle leader logs under 50 KB and uses under
                        5 % of a core in 30 s, answers /readyz 503, refuses promptly; SIGTERM of
                        all three logs under 200 KB
  late-duplicate-event  the real Java event bus; a node-restarted re-published after 1100 other
                        events does not remove a session added after its first delivery

Needs root (tmpfs), haproxy, prlimit, and Java with the Selenium jar for late-duplicate-event.
Ends with `N passed, M failed`; exits non-zero when anything failed. Only 127.0.0.1 is used.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

from hardening_input import scenario_big_requests, scenario_late_duplicate_event
from hardening_scenarios import scenario_disk_full, scenario_idle_leader, scenario_slow_clients
from procs import Results, log, print_tails

SCENARIOS = {
    "disk-full": scenario_disk_full,
    "slow-clients": scenario_slow_clients,
    "big-requests": scenario_big_requests,
    "idle-leader": scenario_idle_leader,
    "late-duplicate-event": scenario_late_duplicate_event,
}


class Ctx:
    def __init__(self, binary, root, jar, results):
        self.binary, self.root, self.jar, self.results = binary, root, jar, results

    def check(self, name, ok, detail=""):
        return self.results.check(name, ok, detail)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gridraft", default=os.path.join(repo, "target", "debug", "gridraft"))
    ap.add_argument("--jar", default=os.environ.get("GRIDRAFT_SELENIUM_JAR", os.path.join(
        repo, "..", "shared", "selenium", "selenium-server-4.48.0.jar")))
    ap.add_argument("--only", default="", help="comma-separated scenario names: " + ",".join(SCENARIOS))
    ap.add_argument("--keep-logs", action="store_true", help="keep every log and data dir on success too")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown}; known: {', '.join(SCENARIOS)}")
    # A SIGTERM (a CI timeout) unwinds like an error, so members stop and the tmpfs is unmounted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary = os.path.abspath(args.gridraft)
    root = tempfile.mkdtemp(prefix="gridraft-hardening-")
    log(f"work dir {root}")
    results = Results()
    ctx = Ctx(binary, root, args.jar, results)
    t_all = time.monotonic()
    for name in names:
        failed_before = results.failed
        log(f"==== scenario {name}")
        t0 = time.monotonic()
        try:
            SCENARIOS[name](ctx)
        except Exception as e:  # noqa: BLE001 - report and go on with the next scenario
            results.check(f"{name}: the scenario ran to its end", False, repr(e))
        log(f"==== scenario {name}: {time.monotonic() - t0:.0f}s, "
            f"{'failed' if results.failed > failed_before else 'passed'}")
        if results.failed > failed_before:
            print_tails(os.path.join(root, name, "logs"), lines=15)
    log(f"all scenarios in {time.monotonic() - t_all:.0f}s")
    if results.failed or args.keep_logs:
        log(f"logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(results.summary(), flush=True)
    sys.exit(1 if results.failed else 0)


if __name__ == "__main__":
    main()
