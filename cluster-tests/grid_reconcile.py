#!/usr/bin/env python3
"""The reconciler against a real Selenium Grid: event-bus, sessionqueue, distributor, router and
one node driving Debian's headless chromium, with a three-member gridraft (short settings:
interval 2s, grace 5s, node-down-after 10s) as its session map. Three cases, in this order:

1. a long-running session on a healthy node, used every two seconds, is never removed across
   ten intervals (and the leader checked the node all along);
2. a session the node dropped without an event (the event bus is stopped, then the session is
   quit through the node directly, so its `session-closed` is lost) leaves the map within
   interval + grace, with "node no longer has the session";
3. the node killed with kill -9 while the event bus is still stopped (no event can ever arrive,
   not even the distributor's `node-removed`): its sessions leave the map within
   interval + node-down-after, with "node unreachable for N seconds".

Prints the measured timings. Ends with a line `N passed, M failed`; exits non-zero when anything
failed. Only 127.0.0.1 is used.
"""

import os
import signal
import time

from procs import Procs, Results, find_leader, http, log, member_args, member_env, wait_until
from selenium_grid import Ports, bus_args, check_logs_have_no_panic, finish, new_session, start_grid, \
    tier_arguments, tier_dirs

SECRET = "reconcile-registration-secret"
CLUSTER_SECRET = "reconcile-cluster-secret"
PORTS = Ports(bus_pub=24442, bus_sub=24443, bus_http=25557, queue=25559, distributor=25553, router=24444,
              node=25555)
MEMBERS = {1: (25561, 27561), 2: (25562, 27562), 3: (25563, 27563)}
INTERVAL, GRACE, NODE_DOWN_AFTER = 2, 5, 10
# Time a check may add on a loaded machine: one node timeout, a commit, a lookup.
SLACK = 5
HEALTHY_INTERVALS = 10
NODE_URI = f"http://127.0.0.1:{PORTS.node}"

results = Results()
procs = None


def check(name, ok, detail=""):
    return results.check(name, ok, detail)


def start_members(binary, workdir):
    with open(os.path.join(workdir, "cluster-secret"), "w") as f:
        f.write(CLUSTER_SECRET)
    for mid in MEMBERS:
        extra = bus_args(PORTS) + ["--registration-secret", SECRET,
                                   "--reconcile-interval", f"{INTERVAL}s", "--reconcile-grace", f"{GRACE}s",
                                   "--reconcile-node-down-after", f"{NODE_DOWN_AFTER}s"]
        procs.start(f"gridraft-{mid}", member_args(binary, mid, MEMBERS, workdir, extra=extra), member_env())
    for mid, (public, _) in MEMBERS.items():
        wait_until(f"member {mid} ready", lambda p=public: http("GET", f"http://127.0.0.1:{p}/readyz")[0] == 204)


def lookup(mid, sid):
    """(status, 404 message or node URI) of `sid` on member `mid`."""
    code, body = http("GET", f"http://127.0.0.1:{MEMBERS[mid][0]}/se/grid/session/{sid}/uri", timeout=10)
    if code == 200:
        return code, body["value"]
    return code, (body or {}).get("value", {}).get("message", str(body))


def in_every_map(sid):
    return all(lookup(mid, sid)[0] == 200 for mid in MEMBERS)


def wait_gone_everywhere(sid, timeout):
    """Seconds until `sid` answers 404 on every member, and the 404 message."""
    started = time.time()
    wait_until(f"{sid[:8]} to leave every member", lambda: all(lookup(mid, sid)[0] == 404 for mid in MEMBERS),
               timeout=timeout, interval=0.2)
    return time.time() - started, lookup(1, sid)[1]


def peer_get(path):
    port = MEMBERS[leader_id()][1]
    return http("GET", f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {CLUSTER_SECRET}"})


def leader_id():
    return wait_until("a gridraft leader", lambda: find_leader([p[1] for p in MEMBERS.values()], CLUSTER_SECRET))


def metric(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def answered_checks():
    return metric(peer_get("/metrics")[1], 'gridraft_reconcile_node_checks_total{outcome="answered"}')


def removal_of(sid):
    code, body = peer_get(f"/admin/removals?node={NODE_URI}")
    return next((r for r in (body or {}).get("removals", []) if r["session_id"] == sid), None)


def case_healthy(long_sid):
    """A session in use on a healthy node stays across many intervals."""
    checks_before = answered_checks()
    started = time.time()
    kept = True
    while time.time() - started < HEALTHY_INTERVALS * INTERVAL:
        code, body = http("GET", f"http://127.0.0.1:{PORTS.router}/session/{long_sid}/title", timeout=30)
        kept = kept and code == 200 and in_every_map(long_sid)
        time.sleep(INTERVAL)
    checks = answered_checks() - checks_before
    check(f"healthy: the long-running session stayed in every map for {HEALTHY_INTERVALS} intervals "
          f"({time.time() - started:.0f}s)", kept)
    check(f"healthy: the leader asked the node at least {HEALTHY_INTERVALS // 2} times meanwhile",
          checks >= HEALTHY_INTERVALS // 2, f"{checks:.0f} answered checks")
    check("healthy: the long-running session is not in the removal history", removal_of(long_sid) is None)


def case_dropped_without_event(sid):
    """The bus is stopped, the session quit through the node itself: no session-closed arrives."""
    log("stopping the event bus (SIGKILL)")
    procs.signal("event-bus", signal.SIGKILL)
    code, body = http("DELETE", f"{NODE_URI}/session/{sid}", timeout=60)
    check("dropped: the node quit the session directly", code == 200, f"got {code} {body}")
    dropped_at = time.time()
    bound = INTERVAL + GRACE
    took, message = wait_gone_everywhere(sid, timeout=bound + SLACK + 20)
    log(f"TIMING dropped session left every member {took:.1f}s after the node dropped it (bound {bound}s)")
    check(f"dropped: the session left every member within interval + grace ({took:.1f}s <= {bound}s + {SLACK}s)",
          took <= bound + SLACK)
    check("dropped: the 404 says the node no longer has the session",
          "reason: node no longer has the session" in message, message)
    r = removal_of(sid)
    check("dropped: the removal history names the reconciler", r is not None and r["source"] == "reconciler"
          and r["reason_code"] == "NODE_LOST_SESSION", str(r))


def case_node_killed(sids):
    """kill -9 of the node with the bus still down: only the reconciler can remove its sessions."""
    log("killing the node and its browsers with SIGKILL (the event bus is still stopped)")
    os.killpg(procs.procs["node"].pid, signal.SIGKILL)
    procs.procs["node"].wait(timeout=30)
    killed_at = time.time()
    bound = INTERVAL + NODE_DOWN_AFTER
    for sid in sids:
        _, message = wait_gone_everywhere(sid, timeout=bound + SLACK + 20)
        took = time.time() - killed_at
        log(f"TIMING session {sid[:8]} of the killed node left every member {took:.1f}s after the kill "
            f"(bound {bound}s)")
        check(f"killed: session {sid[:8]} left every member within interval + node-down-after "
              f"({took:.1f}s <= {bound}s + {SLACK}s)", took <= bound + SLACK)
        check(f"killed: the 404 of {sid[:8]} says the node was unreachable",
              "reason: node unreachable for " in message, message)
        r = removal_of(sid)
        check(f"killed: the removal history has {sid[:8]} as NODE_UNREACHABLE from the reconciler",
              r is not None and r["source"] == "reconciler" and r["reason_code"] == "NODE_UNREACHABLE", str(r))


def main():
    ap = tier_arguments(__doc__)
    args = ap.parse_args()
    workdir, logdir = tier_dirs("gridraft-reconcile-")
    global procs
    procs = Procs(logdir)
    try:
        start_members(args.gridraft, workdir)
        start_grid(procs, args.jar, workdir, PORTS, f"http://127.0.0.1:{MEMBERS[1][0]}", SECRET, max_sessions=3)
        long_sid, doomed, dropped = (new_session(PORTS) for _ in range(3))
        wait_until("the sessions in every map", lambda: all(in_every_map(s) for s in (long_sid, doomed, dropped)))
        check("three real sessions are in every member's map", True)
        case_healthy(long_sid)
        case_dropped_without_event(dropped)
        case_node_killed([long_sid, doomed])
        check_logs_have_no_panic(procs, results, [f"gridraft-{mid}" for mid in MEMBERS])
    except Exception as e:  # noqa: BLE001 - report and count
        check("the run completed", False, repr(e))
    finally:
        finish(procs, results, logdir, args.keep_logs)


if __name__ == "__main__":
    main()
