"""A rolling upgrade from the release before peer streams to this build, under load.

Three `gridraft serve` processes of the earlier build (`--previous`, HTTP between members) on
127.0.0.1 take adds and reads from three clients, one per member, for the whole test. Each
member in turn (followers first, the leader last, as docs/operations.md says) is stopped with
SIGTERM and started again from the same data directory with this build (`--gridraft`). While the
cluster runs both builds, every member must take writes and answer reads; the upgraded members
must reach the earlier ones over HTTP (their log says so) and each other on peer streams. At the
end, every member runs this build with peer streams between all of them, and every add any
member acknowledged, at any point, is read back from every member.

Ports: public 1756x, peer 1956x (no other test uses them). Ends with `N passed, M failed`.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error

from procs import Procs, Results, admin_status, find_leader, http, log, member_args, member_env, print_tails, \
    wait_until
from workload import session_body

MEMBERS = {1: (17561, 19561), 2: (17562, 19562), 3: (17563, 19563)}
SECRET = "rolling-upgrade-secret-0123456789abcdef"
FALLBACK_LINE = "peer does not accept streams"


class Load:
    """One client per member: adds (and reads back) sessions through that member's public port
    until stopped, recording every add it acknowledged and every refusal from a member that was
    not being restarted."""

    def __init__(self):
        self.acked = {}  # session id -> the member that acknowledged it
        self.failures = []  # (member, what) for answers other than 200 from a running member
        self.restarting = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(mid,), daemon=True) for mid in MEMBERS]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def count(self, mid=None):
        with self.lock:
            return sum(1 for m in self.acked.values() if mid is None or m == mid)

    def run(self, mid):
        public = MEMBERS[mid][0]
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"upgrade-{mid}-{n}"
            body = session_body(key, f"http://node-{mid}:5555", n, mid)
            try:
                status, _ = http("POST", f"http://127.0.0.1:{public}/se/grid/session", body, timeout=30)
                if status == 200:
                    read, _ = http("GET", f"http://127.0.0.1:{public}/se/grid/session/{key}", timeout=30)
                    if read != 200:
                        self.failed(mid, f"read of {key} answered {read}")
                    with self.lock:
                        self.acked[key] = mid
                else:
                    self.failed(mid, f"add of {key} answered {status}")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                self.failed(mid, f"add of {key}: {e}")
            time.sleep(0.01)

    def failed(self, mid, what):
        with self.lock:
            if mid in self.restarting:
                return
            self.failures.append((mid, what))
        time.sleep(0.2)


class Cluster:
    def __init__(self, root):
        self.dir = root
        self.logdir = os.path.join(root, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.procs = Procs(self.logdir)
        self.secret_file = os.path.join(root, "cluster-secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET)
        os.chmod(self.secret_file, 0o600)
        self.version = {}

    def start(self, mid, binary, version):
        self.version[mid] = version
        args = member_args(binary, mid, MEMBERS, self.dir)
        self.procs.start(f"gridraft-{mid}-{version}", args, member_env())

    def stop(self, mid):
        return self.procs.signal(f"gridraft-{mid}-{self.version[mid]}", signal.SIGTERM, timeout=60)

    def wait_ready(self, mid, timeout=60):
        public = MEMBERS[mid][0]
        wait_until(f"member {mid} ready", lambda: http("GET", f"http://127.0.0.1:{public}/readyz", timeout=2)[0] == 204,
                   timeout=timeout)

    def leader(self):
        return wait_until("a leader", lambda: find_leader([p[1] for p in MEMBERS.values()], SECRET), timeout=60)

    def metric(self, mid, name):
        peer = MEMBERS[mid][1]
        status, text = http("GET", f"http://127.0.0.1:{peer}/metrics",
                            headers={"Authorization": f"Bearer {SECRET}"}, timeout=5)
        if status != 200:
            return None
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def log_text(self, mid, version):
        with open(self.procs.log_path(f"gridraft-{mid}-{version}"), errors="replace") as f:
            return f.read()

    def applied(self, mid):
        return admin_status(MEMBERS[mid][1], SECRET).get("last_applied")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gridraft", required=True, help="this build's binary")
    ap.add_argument("--previous", required=True, help="the earlier build's binary (scripts/build-previous.sh)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    results = Results()
    root = tempfile.mkdtemp(prefix="gridraft-upgrade-")
    cluster = Cluster(root)
    load = Load()
    try:
        for mid in MEMBERS:
            cluster.start(mid, args.previous, "previous")
        for mid in MEMBERS:
            cluster.wait_ready(mid)
        leader = cluster.leader()
        log(f"earlier build running, leader {leader}")
        load.start()
        wait_until("adds through every member", lambda: all(load.count(m) >= 20 for m in MEMBERS), timeout=60)

        order = [m for m in MEMBERS if m != leader] + [leader]
        for step, mid in enumerate(order, 1):
            before = {m: load.count(m) for m in MEMBERS}
            with load.lock:
                load.restarting.add(mid)
            code = cluster.stop(mid)
            results.check(f"step {step}: the earlier build of member {mid} stops on SIGTERM with 0", code == 0,
                          f"exit {code}")
            cluster.start(mid, args.gridraft, "new")
            cluster.wait_ready(mid)
            time.sleep(1)
            with load.lock:
                load.restarting.discard(mid)
            # Every member, whatever its build, takes writes and answers reads.
            wait_until(f"adds through every member after step {step}",
                       lambda: all(load.count(m) >= before[m] + 20 for m in MEMBERS), timeout=60)
            results.check(f"step {step}: with {step} of 3 members upgraded, every member takes adds", True,
                          ", ".join(f"m{m}: +{load.count(m) - before[m]}" for m in MEMBERS))
            if step < 3:
                text = cluster.log_text(mid, "new")
                results.check(f"step {step}: upgraded member {mid} reaches earlier members over HTTP",
                              FALLBACK_LINE in text,
                              "log line found" if FALLBACK_LINE in text else "no fallback line in its log")

        # All on this build: streams between every pair that talks (leader and followers).
        def streams():
            counts = {m: cluster.metric(m, "gridraft_peer_streams_open") for m in MEMBERS}
            return counts if sum(c or 0 for c in counts.values()) >= 4 and all(counts.values()) else None

        try:
            counts = wait_until("peer streams between the upgraded members", streams, timeout=30)
            results.check("all upgraded: members talk on peer streams", True, f"open streams {counts}")
        except RuntimeError as e:
            results.check("all upgraded: members talk on peer streams", False, str(e))

        time.sleep(2)
        load.finish()
        with load.lock:
            failures = list(load.failures)
        results.check("no running member refused an add or a read during the upgrade", not failures,
                      f"{len(failures)} failures: {failures[:5]}")

        # Every acknowledged add, on every member.
        leader = cluster.leader()
        target = cluster.applied(leader)
        for mid in MEMBERS:
            wait_until(f"member {mid} caught up", lambda: cluster.applied(mid) >= target, timeout=60)
        acked = dict(load.acked)
        for mid in MEMBERS:
            public = MEMBERS[mid][0]
            missing = [k for k in acked
                       if http("GET", f"http://127.0.0.1:{public}/se/grid/session/{k}", timeout=30)[0] != 200]
            results.check(f"member {mid} reads every acknowledged add", not missing,
                          f"{len(acked)} acknowledged, {len(missing)} missing {missing[:5]}")
    except Exception as e:  # noqa: BLE001 - reported as a failure with the logs
        results.check("the rolling upgrade ran to the end", False, repr(e))
    finally:
        load.stop.set()
        cluster.procs.stop_all()
        if results.failed:
            print_tails(cluster.logdir, 40)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(results.summary())
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
