#!/usr/bin/env python3
"""The status page `/ui` in a real browser: three gridraft processes on 127.0.0.1 subscribed to
Selenium's own event bus (from the jar), Debian's headless chromium loading the page from a
follower. Checks that the DOM names the leader, counts the sessions per Grid node, lists a
removal made by DELETE and one made by a `session-closed` event, shows every member connected
to the bus, and never shows a capability; pauses another follower (SIGSTOP: the page must show
it down without waiting more than the 1 s peer timeout) and resumes it, kills it with SIGKILL, reloads until
the page shows that member down; saves screenshots before and after the kill under the run's
log directory and prints their paths.

Ends with a line `N passed, M failed`; exits non-zero when anything failed.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from procs import Procs, Results, find_leader, http, log, member_args, member_env, wait_until
from zmtp import Publisher

CLUSTER_SECRET = "ui-cluster-secret"
REG_SECRET = "ui-registration-secret"
SECRET_CAP = "hunter2-never-on-the-page"
NODE_A, NODE_B = "http://10.1.0.1:5555", "http://10.1.0.2:5555"

results = Results()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(args, profile, timeout=60):
    """Runs headless chromium once; returns its stdout."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--no-first-run", *args]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    return done.stdout.decode(errors="replace")


def dump_dom(url, profile):
    return chromium(["--dump-dom", url], profile)


def screenshot(url, path, profile):
    chromium([f"--screenshot={path}", "--window-size=1280,1024", url], profile)
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def member_row(dom, mid):
    """The table row of member `mid`, or ''."""
    m = re.search(rf'<tr id="member-{mid}">.*?</tr>', dom, re.S)
    return m.group(0) if m else ""


def add_session(public, sid, node, caps):
    body = {"capabilities": caps, "sessionId": sid, "start": "2026-01-01T12:00:00Z",
            "stereotype": {"browserName": "chrome"}, "uri": node}
    return http("POST", f"http://127.0.0.1:{public}/se/grid/session", body)[0]


def start_bus(jar, procs):
    """Selenium's event bus; returns (publish port, subscribe port)."""
    pub, sub, port = free_port(), free_port(), free_port()
    procs.start("event-bus", ["java", "-jar", jar, "event-bus", "--publish-events", f"tcp://*:{pub}",
                              "--subscribe-events", f"tcp://*:{sub}", "--port", str(port),
                              "--host", "127.0.0.1", "--registration-secret", REG_SECRET])
    wait_until("the event bus", lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] in (200, 204),
               timeout=90)
    return pub, sub


def session_closed(sid, reason):
    data = json.dumps({"sessionId": sid, "reason": reason})
    return [b"session-closed", json.dumps(REG_SECRET).encode(), str(uuid.uuid4()).encode(), data.encode()]


def run(binary, jar, workdir, logdir, procs):
    if not os.path.exists(jar):
        raise RuntimeError(f"no Selenium jar at {jar} (set GRIDRAFT_SELENIUM_JAR or --jar)")
    bus_pub, bus_sub = start_bus(jar, procs)
    bus = ["--publish-events", f"tcp://127.0.0.1:{bus_pub}", "--subscribe-events", f"tcp://127.0.0.1:{bus_sub}",
           "--registration-secret", REG_SECRET]
    members = {mid: (free_port(), free_port()) for mid in (1, 2, 3)}
    with open(os.path.join(workdir, "cluster-secret"), "w") as f:
        f.write(CLUSTER_SECRET)
    for mid in members:
        procs.start(f"gridraft-{mid}", member_args(binary, mid, members, workdir, extra=bus), member_env())
    for mid, (public, _) in members.items():
        wait_until(f"member {mid} ready",
                   lambda p=public: http("GET", f"http://127.0.0.1:{p}/readyz")[0] == 204, timeout=60)
    peers = [p for _, p in members.values()]
    leader = wait_until("a leader", lambda: find_leader(peers, CLUSTER_SECRET), timeout=30)
    viewer, victim = [mid for mid in members if mid != leader][:2]
    log(f"leader {leader}; the page is loaded from member {viewer}; member {victim} will be killed")

    pub = members[viewer][0]
    codes = [add_session(pub, "sess-a-1", NODE_A, {"browserName": "chrome", "se:token": SECRET_CAP}),
             add_session(pub, "sess-a-2", NODE_A, {"browserName": "chrome"}),
             add_session(pub, "sess-b-1", NODE_B, {"browserName": "chrome"}),
             add_session(pub, "sess-gone", NODE_B, {"browserName": "chrome"}),
             add_session(pub, "sess-timed-out", NODE_B, {"browserName": "chrome"}),
             http("DELETE", f"http://127.0.0.1:{pub}/se/grid/session/sess-gone")[0]]
    results.check("sessions added and one removed by DELETE", codes == [200] * 6, f"codes {codes}")
    publisher = Publisher("127.0.0.1", bus_sub)
    try:
        publisher.send(session_closed("sess-timed-out", "TIMEOUT"))
        wait_until("the session-closed event to remove the session", lambda: http(
            "GET", f"http://127.0.0.1:{pub}/se/grid/session/sess-timed-out")[0] == 404, timeout=30)
    finally:
        publisher.close()

    url = f"http://127.0.0.1:{pub}/ui"
    profile = os.path.join(workdir, "chromium-profile")
    dom = dump_dom(url, profile)
    named = f'Leader: <span class="lead">member {leader}</span>' in dom
    results.check("the DOM names the leader", named, f"member {leader}" if named else dom[:300])
    results.check("every member is shown up",
                  all('<td class="up">up</td>' in member_row(dom, mid) for mid in members))
    results.check("sessions are counted per Grid node",
                  "3 live sessions on 2 Grid nodes." in dom
                  and f"<td><code>{NODE_A}</code></td><td>2</td>" in dom
                  and f"<td><code>{NODE_B}</code></td><td>1</td>" in dom)
    results.check("both removals are in the history with their reasons and sources",
                  re.search(r"<code>sess-gone</code>.*?session closed normally.*?<td>delete</td>", dom) is not None
                  and re.search(r"<code>sess-timed-out</code>.*?session timed out.*?<td>event</td>", dom) is not None)
    results.check("every member is shown connected to the event bus",
                  all("<td>connected; last message " in member_row(dom, mid) for mid in members),
                  member_row(dom, viewer))
    results.check("no capability is on the page",
                  SECRET_CAP not in dom and "se:token" not in dom and "browserName" not in dom)
    before = os.path.join(logdir, "status-page-before-kill.png")
    results.check("a screenshot before the kill", screenshot(url, before, profile), before)

    log(f"pausing member {victim} with SIGSTOP")
    procs.signal(f"gridraft-{victim}", signal.SIGSTOP, wait=False)
    slowest = [0.0]

    def shows_paused():
        t0 = time.time()
        code, page = http("GET", url, timeout=10)
        slowest[0] = max(slowest[0], time.time() - t0)
        row = member_row(page or "", victim)
        return code == 200 and '<td class="down">down</td>' in row and "no answer within 1s" in row

    try:
        wait_until(f"the page to show paused member {victim} down", shows_paused, timeout=10, interval=0.2)
        results.check("a paused member is shown down and delays the page by at most its timeout",
                      slowest[0] < 2.5, f"slowest page load {slowest[0]:.2f}s")
    except RuntimeError as e:
        results.check("a paused member is shown down", False, str(e)[:300])
    procs.signal(f"gridraft-{victim}", signal.SIGCONT, wait=False)
    try:
        wait_until(f"the page to show member {victim} up again", lambda: '<td class="up">up</td>' in member_row(
            http("GET", url, timeout=10)[1] or "", victim), timeout=20, interval=0.2)
        results.check(f"member {victim} is shown up again after SIGCONT", True)
    except RuntimeError as e:
        results.check(f"member {victim} is shown up again after SIGCONT", False, str(e)[:300])
    log(f"killing member {victim} with SIGKILL")
    procs.signal(f"gridraft-{victim}", signal.SIGKILL)
    killed = time.time()

    def shows_down():
        d = dump_dom(url, profile)
        return d if '<td class="down">down</td>' in member_row(d, victim) else None

    try:
        dom = wait_until(f"the page to show member {victim} down", shows_down, timeout=20, interval=0.2)
        results.check(f"the page shows member {victim} down", True,
                      f"{time.time() - killed:.1f}s after the kill")
    except RuntimeError as e:
        results.check(f"the page shows member {victim} down", False, str(e)[:300])
    results.check("the leader is still named after the kill",
                  f'Leader: <span class="lead">member {leader}</span>' in dom)
    after = os.path.join(logdir, "status-page-after-kill.png")
    results.check("a screenshot after the kill", screenshot(url, after, profile), after)
    log(f"screenshots: {before} {after}")
    for mid in members:
        with open(procs.log_path(f"gridraft-{mid}"), errors="replace") as f:
            results.check(f"no panic in the log of gridraft-{mid}", "panicked" not in f.read())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gridraft", default=os.path.join(os.path.dirname(here), "target", "debug", "gridraft"))
    ap.add_argument("--jar", default=os.environ.get("GRIDRAFT_SELENIUM_JAR", os.path.join(
        os.path.dirname(os.path.dirname(here)), "shared", "selenium", "selenium-server-4.48.0.jar")))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="gridraft-ui-")
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir)
    log(f"work dir {workdir}")
    procs = Procs(logdir)
    try:
        run(args.gridraft, args.jar, workdir, logdir, procs)
    except Exception as e:  # noqa: BLE001 - report and count
        results.check("the run completed", False, repr(e))
    finally:
        procs.stop_all()
        if results.failed:
            procs.print_tails()
        # The logs and screenshots stay; the data directories and the browser profile go.
        for name in os.listdir(workdir):
            if name != "logs":
                path = os.path.join(workdir, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        log(f"logs and screenshots kept in {logdir}")
    print(results.summary(), flush=True)
    sys.exit(1 if results.failed else 0)


if __name__ == "__main__":
    main()
