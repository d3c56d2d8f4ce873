"""The fault tier's input scenarios: oversized and deeply nested bodies and huge node URIs
followed by `kill -9` and a restart (big-requests), and a late duplicate `node-restarted` from
the real Java event bus (late-duplicate-event).
"""

import json
import os
import re
import signal
import threading
import time
import uuid

from hardening_cluster import MEMBERS, VIP, Cluster, post_body
from hardening_scenarios import http_or_error
from procs import http, log, wait_until
from zmtp import Publisher

MIB = 1 << 20
START = "2026-11-28T10:20:30.123400Z"
LIMIT_WORDS = re.compile(r"max-[a-z-]*bytes|limit", re.I)
CUT_WORDS = re.compile(r"\bcut\b|damaged", re.I)


def flat_body(sid, size):
    """A session whose capabilities hold one flat array, `size` bytes in all."""
    head = json.dumps({"sessionId": sid, "uri": "http://node-1.grid:5555", "start": START,
                       "stereotype": {"browserName": "chrome"}})[:-1].encode() + b', "capabilities": {"a": ['
    n = (size - len(head) - 4) // 2
    return head + b"0," * (n - 1) + b"0]}}"


def nested_body(sid, size, depth=20):
    """A session whose capabilities hold arrays `depth` deep, `size` bytes in all."""
    head = json.dumps({"sessionId": sid, "uri": "http://node-1.grid:5555", "start": START,
                       "stereotype": {"browserName": "chrome"}})[:-1].encode() + b', "capabilities": {"a": '
    n = (size - len(head) - 2 * depth - 2) // 2
    return head + b"[" * depth + b"0," * (n - 1) + b"0" + b"]" * depth + b"}}"


def uri_body(sid, uri):
    return json.dumps({"sessionId": sid, "uri": uri, "start": START, "stereotype": {"browserName": "chrome"},
                       "capabilities": {"browserName": "chrome"}}).encode()


def post(port, body, timeout=300):
    return post_body(port, "/se/grid/session", body, timeout=timeout)


def refused_naming_limit(code, body):
    value = body.get("value", {}) if isinstance(body, dict) else {}
    return code == 500 and value.get("error") == "unknown error" and bool(LIMIT_WORDS.search(value.get("message", "")))


def describe(code, body):
    if isinstance(body, dict):
        value = body.get("value")
        if isinstance(value, dict):
            return f"{code} {value.get('error')}: {str(value.get('message'))[:160]}"
    return f"{code} {str(body)[:160]}"


def scenario_big_requests(ctx):
    c = ctx.check
    # Snapshots after a few hundred entries, so the add+delete pairs leave one behind.
    cl = Cluster("big-requests", ctx.binary, ctx.root, extra=["--snapshot-after-entries", "200"])
    acked, removed = {}, []
    try:
        cl.start()
        for n in range(20):
            if cl.add(f"keep-{n}", f"http://node-{n % 5}.grid:5555")[0] == 200:
                acked[f"keep-{n}"] = f"http://node-{n % 5}.grid:5555"
        port1 = MEMBERS[1][0]
        before = cl.peak_rss_kib(1)
        code, body = post(port1, flat_body("big-flat", 16 * MIB - 4096))
        grew = (cl.peak_rss_kib(1) - before) / 1024
        c("big-requests: a 16 MiB POST is refused with 500 naming the limit", refused_naming_limit(code, body),
          describe(code, body))
        c("big-requests: peak RSS grows by less than 64 MB for the 16 MiB POST", grew < 64,
          f"VmHWM {before // 1024} -> {cl.peak_rss_kib(1) // 1024} MB (+{grew:.0f} MB)")
        if code == 200:
            acked["big-flat"] = "http://node-1.grid:5555"
        code, body = post(port1, nested_body("big-nested", 3 * MIB))
        c("big-requests: a 3 MiB body 20 arrays deep is refused with 500 naming the limit",
          refused_naming_limit(code, body), describe(code, body))
        if code == 200:
            acked["big-nested"] = "http://node-1.grid:5555"
        huge_uri = "http://node-huge.grid:5555/" + "u" * int(1.3 * MIB)
        code, body = post(port1, uri_body("big-uri", huge_uri))
        c("big-requests: a session with a 1.3 MiB node URI is refused with 500 naming the limit",
          refused_naming_limit(code, body), describe(code, body))
        if code == 200:
            acked["big-uri"] = huge_uri
        eight_at_once(ctx, cl, acked)
        uri = largest_accepted_uri(cl, None if refused_naming_limit(code, body) else huge_uri)
        pairs = add_delete_pairs(cl, uri, removed)
        c("big-requests: 220 add+delete pairs with the largest accepted node URI acknowledged", pairs == 220,
          f"{pairs} pairs with a {len(uri)}-byte node URI")
        try:
            wait_until("a snapshot on every member", lambda: all(cl.status(m).get("snapshot") for m in MEMBERS),
                       timeout=30)
            snap = {m: cl.status(m).get("snapshot") for m in MEMBERS}
        except RuntimeError as e:
            snap = repr(e)
        c("big-requests: every member has a snapshot before the crash", isinstance(snap, dict), f"{snap}")
        crash_and_restart(ctx, cl, acked, removed)
    finally:
        cl.stop()


def eight_at_once(ctx, cl, acked):
    body = flat_body("eight", 16 * MIB - 4096)
    out = {}

    def send(n):
        out[n] = post(VIP, body.replace(b'"eight"', f'"eight-{n}"'.encode(), 1))
    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, (code, _) in out.items():
        if code == 200:
            acked[f"eight-{n}"] = "http://node-1.grid:5555"
    codes = sorted(str(code) for code, _ in out.values())
    try:
        wait_until("every member ready", lambda: all(cl.ready(m) == 204 for m in MEMBERS), timeout=30)
    except RuntimeError:
        pass
    up = [m for m in MEMBERS if cl.alive(m)]
    ready = {m: cl.ready(m) for m in MEMBERS}
    ctx.check("big-requests: eight 16 MiB POSTs at once leave every member up (alive and ready)",
              len(up) == 3 and all(v == 204 for v in ready.values()), f"answers {codes}, alive {up}, readyz {ready}")


def largest_accepted_uri(cl, unrefused_huge):
    """The 1.3 MiB URI if no limit refused it (the unfixed case), else the longest of a few
    sizes up to the agreed 4096-byte default that a member accepts."""
    if unrefused_huge:
        return unrefused_huge
    for size in (4096, 4000, 2048, 1024):
        uri = "http://node-big.grid:5555/" + "u" * (size - 26)
        sid = f"probe-{size}"
        if cl.add(sid, uri)[0] == 200:
            cl.delete(sid)
            return uri
    return "http://node-big.grid:5555/"


def add_delete_pairs(cl, uri, removed, count=220, budget=150):
    """Adds and removes `count` sessions on `uri` through the VIP within `budget` seconds;
    returns how many pairs were acknowledged (their ids are appended to `removed`)."""
    pairs, t0 = 0, time.monotonic()
    for n in range(count):
        if time.monotonic() - t0 > budget:
            log(f"big-requests: stopped the pairs after {budget} s at {n}")
            break
        sid = f"pair-{n}"
        code, _ = http_or_error(lambda: cl.add(sid, uri, timeout=60))
        if code == 200:
            code, _ = http_or_error(lambda: cl.delete(sid, timeout=60))
            if code == 200:
                removed.append(sid)
                pairs += 1
    log(f"big-requests: {pairs} add+delete pairs with a {len(uri)}-byte node URI in {time.monotonic() - t0:.1f}s")
    return pairs


def crash_and_restart(ctx, cl, acked, removed):
    c = ctx.check
    before = {m: cl.segments(m) for m in MEMBERS}
    for m in MEMBERS:
        cl.kill(m, signal.SIGKILL)
    marks = {m: cl.log_size(m) for m in MEMBERS}
    log("big-requests: every member killed with SIGKILL; restarting")
    for m in MEMBERS:
        cl.start_member(m)
    started = {}
    for m in MEMBERS:
        try:
            cl.wait_ready(m, timeout=90)
            started[m] = True
        except RuntimeError:
            started[m] = f"alive={cl.alive(m)} exit={cl.proc(m).poll()}"
    c("big-requests: every member starts again after kill -9", all(v is True for v in started.values()),
      f"{started}")
    cut = {m: [line[:200] for line in cl.log_text(m, marks[m]).splitlines() if CUT_WORDS.search(line)]
           for m in MEMBERS}
    shrunk = {m: {n: (size, cl.segments(m).get(n)) for n, size in before[m].items()
                  if n in cl.segments(m) and cl.segments(m)[n] < size} for m in MEMBERS}
    c("big-requests: no log segment was cut on restart (log lines, segment sizes)",
      not any(cut.values()) and not any(shrunk.values()), f"log {cut}, shrunk {shrunk}")
    lost = {m: cl.missing(list(acked.items()), mid=m) for m in MEMBERS if started.get(m) is True}
    back = {m: [sid for sid in removed[:20] if cl.uri_of(sid, base=cl.public(m))[0] != 404]
            for m in MEMBERS if started.get(m) is True}
    c("big-requests: every acknowledged session present on every member after the restart",
      len(lost) == 3 and not any(lost.values()) and not any(back.values()),
      f"{len(acked)} sessions; missing {({m: v[:3] for m, v in lost.items() if v})}, removed but back {back}")


BUS_PUB, BUS_SUB, BUS_HTTP = 16442, 16443, 16557
REG_SECRET = "hardening-registration-secret"


def node_status(uri):
    return json.dumps({"availability": "UP", "externalUri": uri, "heartbeatPeriod": 60000, "maxSessions": 1,
                       "nodeId": str(uuid.uuid4()), "osInfo": {"arch": "amd64", "name": "Linux", "version": "6"},
                       "sessionTimeout": 300000, "slots": [], "version": "4.48.0"})


def event(name, event_id, data):
    return [name.encode(), json.dumps(REG_SECRET).encode(), str(event_id).encode(), data.encode()]


def bus_messages(cl, m):
    return sum(float(line.rsplit(" ", 1)[1]) for line in cl.metrics(m).splitlines()
               if line.startswith("gridraft_event_bus_messages_total{"))


def scenario_late_duplicate_event(ctx):
    c = ctx.check
    if not ctx.jar or not os.path.exists(ctx.jar):
        c("late-duplicate-event: the Selenium jar is present", False, f"no jar at {ctx.jar}")
        return
    bus_args = ["--publish-events", f"tcp://127.0.0.1:{BUS_PUB}", "--subscribe-events", f"tcp://127.0.0.1:{BUS_SUB}",
                "--registration-secret", REG_SECRET]
    cl = Cluster("late-duplicate-event", ctx.binary, ctx.root, extra=bus_args)
    pub = None
    try:
        cl.procs.start("event-bus", ["java", "-jar", ctx.jar, "event-bus", "--publish-events", f"tcp://*:{BUS_PUB}",
                                     "--subscribe-events", f"tcp://*:{BUS_SUB}", "--port", str(BUS_HTTP),
                                     "--host", "127.0.0.1", "--registration-secret", REG_SECRET])
        wait_until("the event bus", lambda: http("GET", f"http://127.0.0.1:{BUS_HTTP}/readyz")[0] in (200, 204),
                   timeout=90)
        cl.start()
        wait_until("every member on the bus", lambda: all(
            "gridraft_event_bus_connected 1" in cl.metrics(m) for m in MEMBERS), timeout=30)
        pub = Publisher("127.0.0.1", BUS_SUB)
        node_u = "http://node-u.grid:5555"
        code_a, _ = cl.add("late-a", node_u)
        e = uuid.uuid4()
        base = {m: bus_messages(cl, m) for m in MEMBERS}
        pub.send(event("node-restarted", e, node_status(node_u)))
        wait_until("A to leave every member", lambda: all(
            cl.uri_of("late-a", base=cl.public(m))[0] == 404 for m in MEMBERS), timeout=30)
        log("late-duplicate-event: node-restarted(U) removed A from every member")
        code_b, _ = cl.add("late-b", node_u)
        c("late-duplicate-event: sessions A and B added on node U", code_a == 200 and code_b == 200,
          f"{code_a} {code_b}")
        t0 = time.monotonic()
        for n in range(1100):
            pub.send(event("session-closed", uuid.uuid4(),
                           json.dumps({"sessionId": f"unknown-{n}", "reason": "QUIT_COMMAND"})))
            if n % 100 == 99:
                wait_until(f"{n + 1} events on every member",
                           lambda: all(bus_messages(cl, m) >= base[m] + n + 2 for m in MEMBERS), timeout=60)
        log(f"late-duplicate-event: 1100 other events received by every member in {time.monotonic() - t0:.1f}s")
        wait_applied(cl)
        pub.send(event("node-restarted", e, node_status(node_u)))
        wait_until("the late duplicate on every member",
                   lambda: all(bus_messages(cl, m) >= base[m] + 1102 for m in MEMBERS), timeout=30)
        wait_applied(cl)
        gone = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not gone:
            gone = {m: code for m in MEMBERS if (code := cl.uri_of("late-b", base=cl.public(m))[0]) != 200}
            time.sleep(0.2)
        c("late-duplicate-event: B is still in the map on every member after the late duplicate", not gone,
          f"B answered {gone}" if gone else "200 on members 1, 2, 3")
    finally:
        if pub:
            pub.close()
        cl.stop()


def wait_applied(cl):
    """Until every member has applied everything and the log stops growing for a moment."""
    def settled():
        s = [cl.status(m) for m in MEMBERS]
        idx = {x["last_applied"] for x in s} | {x["last_log_index"] for x in s}
        if len(idx) != 1:
            return False
        time.sleep(0.5)
        return cl.status(1)["last_applied"] == idx.pop()
    wait_until("every member to apply everything", settled, timeout=60)
