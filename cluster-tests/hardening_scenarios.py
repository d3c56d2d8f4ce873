"""The fault tier's scenarios (issue 14), one function each, against real processes. Each gets a
`Ctx` (binary, work root, results, Selenium jar) and its own fresh cluster, and prints
PASS/FAIL lines with what it measured.

disk-full, slow-clients, idle-leader here; big-requests and late-duplicate-event in
hardening_input.py.
"""

import errno
import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error

from hardening_cluster import CLK_TCK, CLUSTER_SECRET, MEMBERS, Cluster, Load
from procs import http, log, wait_until

DISK_SIZE = "96m"


def scenario_disk_full(ctx):
    """Member 3's data directory on a small tmpfs fills up under load through the VIP."""
    c = ctx.check
    mnt = os.path.join(ctx.root, "disk-full", "m3")
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", mnt],
                       capture_output=True, text=True)
    if not c("disk-full: tmpfs mounted for member 3", r.returncode == 0,
             "" if r.returncode == 0 else r.stderr.strip() + " (needs root)"):
        return None
    cl = Cluster("disk-full", ctx.binary, ctx.root, data_dirs={3: mnt})
    load = Load(cl)
    try:
        cl.start()
        load.start()
        time.sleep(3)
        t_fill = time.monotonic()
        filled = fill(os.path.join(mnt, "filler"))
        t_full = time.monotonic()
        log(f"disk-full: wrote {filled >> 20} MiB to member 3's tmpfs until ENOSPC in {t_full - t_fill:.2f}s")
        t_out = wait_out_of_balancer(cl, 3, timeout=20)
        took = None if t_out is None else max(0.0, t_out - t_full)
        c("disk-full: member 3 out of haproxy within 3 s of its disk filling", took is not None and took <= 3,
          f"took {took:.2f}s" if took is not None else f"still {cl.balancer().get(3)} 20 s after ENOSPC")
        # The balancer's check has run once the member is out, or 3 s after the disk filled.
        t_checked = min(t_out or t_full + 3, t_full + 3)
        time.sleep(5)
        ready3, alive3, exit3 = cl.ready(3), cl.alive(3), cl.proc(3).poll()
        c("disk-full: member 3 exits non-zero or stays not ready",
          (not alive3 and exit3 != 0) or (alive3 and ready3 != 204), f"alive={alive3} readyz={ready3} exit={exit3}")
        # The script is the restart policy: restarted while the disk is still full, the member
        # must never be put back in the balancer.
        ups, restarts = restart_policy(cl, 3, seconds=8)
        c("disk-full: restarted with the disk still full, member 3 stays out of haproxy", not ups,
          f"{restarts} restarts in 8 s, haproxy saw it UP {len(ups)} times")
        load.stop()
        failed = load.failed_since(t_checked)
        c("disk-full: 0 failed lookups through the VIP once the balancer's check has run",
          not failed, f"{len(failed)} of {load.lookups} failed, e.g. {failed[:3]}")
        acked = list(load.acked.items())
        lost = cl.missing(acked)
        c("disk-full: 0 acknowledged sessions lost (through the VIP)", not lost,
          f"{len(lost)} of {len(acked)} lost, e.g. {lost[:3]}")
        log(f"disk-full: {load.adds} adds ({load.failed_adds} failed), {len(acked)} acknowledged and kept, "
            f"{load.lookups} lookups")
        os.remove(os.path.join(mnt, "filler"))
        t_freed = time.monotonic()
        # Kept if it recovers by itself, else restarted (the restart policy again).
        try:
            wait_until("member 3 ready or gone", lambda: cl.ready(3) == 204 or not cl.alive(3), timeout=10)
        except RuntimeError:
            pass
        if cl.ready(3) != 204:
            restart(cl, 3)
        try:
            cl.wait_ready(3, timeout=60)
            rejoined = time.monotonic() - t_freed
        except RuntimeError:
            rejoined = None
        c("disk-full: member 3 rejoins (readyz 204) after the space is freed", rejoined is not None,
          f"{rejoined:.1f}s after freeing" if rejoined is not None else f"readyz {cl.ready(3)}")
        lost3 = cl.missing(acked, mid=3)
        c("disk-full: member 3 holds every acknowledged session", not lost3,
          f"{len(lost3)} of {len(acked)} missing on member 3, e.g. {lost3[:3]}")
        return cl
    finally:
        load.stop()
        cl.stop()
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def fill(path):
    """Writes until ENOSPC; returns the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return written


def wait_out_of_balancer(cl, mid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cl.balancer().get(mid, "").startswith("UP"):
            return time.monotonic()
        time.sleep(0.05)
    return None


def restart_policy(cl, mid, seconds):
    """Restarts the member whenever it has exited (after 1 s, like docker's policy) for
    `seconds`; returns the times haproxy had it UP, and the number of restarts."""
    ups, restarts, exited_at = [], 0, None
    restart(cl, mid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cl.balancer().get(mid, "").startswith("UP"):
            ups.append(time.monotonic())
        if not cl.alive(mid):
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at >= 1:
                cl.start_member(mid)
                restarts, exited_at = restarts + 1, None
        time.sleep(0.1)
    return ups, restarts + 1


def restart(cl, mid, prefix=()):
    if cl.alive(mid):
        cl.kill(mid, signal.SIGKILL)
    log(f"restarting member {mid}")
    cl.start_member(mid, prefix)


def open_idle(port, count, timeout=5):
    """`count` connections to a port, opened at once and sending nothing; returns (connected
    sockets, how many were refused or not accepted within `timeout`)."""
    pending = {}
    poller = select.poll()
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        pending[s.fileno()] = s
        poller.register(s, select.POLLOUT)
    socks, failed = [], 0
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            s = pending.pop(fd)
            poller.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                socks.append(s)
            else:
                s.close()
                failed += 1
    for s in pending.values():
        s.close()
    return socks, failed + len(pending)


def close_all(socks):
    for s in socks:
        s.close()


def half_sent_request(port, limit=65):
    """Sends a request's first lines and nothing more; returns seconds until the server closed
    the connection, or None if it was still open after `limit`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(1)
    try:
        while time.monotonic() - t0 < limit:
            try:
                if not s.recv(4096):
                    return time.monotonic() - t0
            except socket.timeout:
                continue
            except OSError:
                return time.monotonic() - t0
        return None
    finally:
        s.close()


def timed_lookup(cl, mid, sid):
    t = time.monotonic()
    try:
        code, _ = cl.uri_of(sid, base=cl.public(mid), timeout=30)
    except OSError as e:
        code = repr(e)
    return time.monotonic() - t, code


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))
    return soft, hard


def scenario_slow_clients(ctx):
    c = ctx.check
    cl = Cluster("slow-clients", ctx.binary, ctx.root)
    socks = []
    try:
        cl.start()
        target = 2
        port = MEMBERS[target][0]
        # The half-sent request goes to another member, which stays up while this one is restarted.
        half = {}
        t_half = threading.Thread(target=lambda: half.setdefault("s", half_sent_request(MEMBERS[3][0])),
                                  daemon=True)
        t_half.start()
        cl.add("slow-probe", "http://node-1.grid:5555")
        base = min(timed_lookup(cl, target, "slow-probe")[0] for _ in range(5))
        old = raise_nofile(12000)
        socks, refused = open_idle(port, 5000)
        log(f"slow-clients: {len(socks)} idle connections open to member {target}, {refused} refused")
        worst, codes = 0.0, []
        for _ in range(5):
            took, code = timed_lookup(cl, target, "slow-probe")
            worst, codes = max(worst, took), codes + [code]
        c("slow-clients: 5,000 idle connections delay a lookup through that member by less than 1 s",
          all(x == 200 for x in codes) and worst - base < 1.0,
          f"baseline {base * 1000:.0f} ms, worst {worst * 1000:.0f} ms, statuses {codes}")
        code, _ = http_or_error(lambda: cl.add("slow-add", "http://node-2.grid:5555", base=cl.public(target)))
        if code != 200:  # the member may refuse the excess connections; Raft must still commit
            code, _ = http_or_error(lambda: cl.add("slow-add", "http://node-2.grid:5555"))
        c("slow-clients: with 5,000 idle connections an add still commits", code == 200, f"status {code}")
        # Refusing the excess public connections is allowed; its peer port must still say ready.
        ready = cl.ready(target)
        peer_ready = http_or_error(lambda: (200, cl.status(target).get("ready")))[1]
        c("slow-clients: the member stays ready", ready == 204 or (ready is None and peer_ready is True),
          f"readyz {ready}, ready on the peer port {peer_ready}")
        close_all(socks)
        socks = []
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
        low_fd_flood(ctx, cl, target)
        t_half.join(timeout=70)
        took = half.get("s")
        c("slow-clients: a half-sent request is closed within 60 s", took is not None and took <= 60,
          f"closed after {took:.1f}s" if took is not None else "still open after 65 s")
    finally:
        close_all(socks)
        cl.stop()


def http_or_error(fn):
    try:
        return fn()
    except (OSError, urllib.error.URLError) as e:
        return repr(e), None


def low_fd_flood(ctx, cl, target):
    """The member restarted under `prlimit --nofile=1024:1024`, made leader, flooded with 2,000
    connections, then an election forced elsewhere: Raft must keep working."""
    c = ctx.check
    cl.kill(target, signal.SIGTERM)
    mark = cl.log_size(target)
    cl.start_member(target, prefix=("prlimit", "--nofile=1024:1024", "--"))
    cl.wait_ready(target)
    http("POST", f"http://127.0.0.1:{MEMBERS[target][1]}/peer/timeout-now",
         headers={"Authorization": f"Bearer {CLUSTER_SECRET}"}, timeout=5)
    try:
        wait_until(f"member {target} to lead", lambda: cl.leader() == target, timeout=15)
    except RuntimeError:
        log(f"slow-clients: member {target} did not take the lead; flooding it as a follower")
    old = raise_nofile(6000)
    socks, refused = open_idle(MEMBERS[target][0], 2000)
    try:
        log(f"slow-clients: {len(socks)} connections to member {target} (fd limit 1024), {refused} refused")
        other = next(m for m in MEMBERS if m != target)
        http_or_error(lambda: http("POST", f"http://127.0.0.1:{MEMBERS[other][1]}/peer/timeout-now",
                                   headers={"Authorization": f"Bearer {CLUSTER_SECRET}"}, timeout=5))
        codes = []
        for n in range(5):
            code, _ = http_or_error(lambda: cl.add(f"lowfd-{n}", "http://node-3.grid:5555", timeout=20))
            codes.append(code)
        c("slow-clients: with 2,000 connections on a 1024-fd member, adds through the VIP commit",
          all(x == 200 for x in codes), f"statuses {codes}")
        try:
            status = cl.status(target)
            detail = f"leader {status.get('leader')}, term {status.get('term')}"
            follows = status.get("leader") is not None
        except (OSError, ValueError) as e:
            follows, detail = False, f"peer port: {e!r}"
        c("slow-clients: the flooded member's Raft still follows a leader (peer port answers)", follows, detail)
        text = cl.log_text(target, since=mark)
        stopped = [w for w in ("raft has stopped", "quit RaftCore", "Too many open files") if w in text]
        c("slow-clients: Raft never stopped on the flooded member, process alive", not stopped and cl.alive(target),
          f"alive={cl.alive(target)}, in its log: {stopped}")
    finally:
        close_all(socks)
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def scenario_idle_leader(ctx):
    c = ctx.check
    cl = Cluster("idle-leader", ctx.binary, ctx.root)
    try:
        cl.start()
        cl.add("idle-before", "http://node-1.grid:5555")
        lead = cl.wait_leader()
        followers = [m for m in MEMBERS if m != lead]
        for m in followers:
            cl.kill(m, signal.SIGKILL)
        log(f"idle-leader: followers {followers} killed; leader {lead} left alone for 30 s")
        size0, cpu0, t0 = cl.log_size(lead), cl.cpu_ticks(lead), time.monotonic()
        time.sleep(30)
        size1, cpu1, t1 = cl.log_size(lead), cl.cpu_ticks(lead), time.monotonic()
        logged = size1 - size0
        cpu = (cpu1 - cpu0) / CLK_TCK / (t1 - t0) * 100
        c("idle-leader: under 50 KB of log in 30 s", logged < 50_000, f"{logged} bytes")
        c("idle-leader: under 5 % of a core in 30 s", cpu < 5, f"{cpu:.1f} %")
        c("idle-leader: /readyz 503", cl.ready(lead) == 503, f"readyz {cl.ready(lead)}")
        for what, fn in (("a lookup", lambda: cl.uri_of("idle-before", base=cl.public(lead), timeout=60)),
                         ("an add", lambda: cl.add("idle-during", "http://node-2.grid:5555", base=cl.public(lead),
                                                timeout=60))):
            t = time.monotonic()
            code, _ = http_or_error(fn)
            took = time.monotonic() - t
            c(f"idle-leader: {what} is refused within 5 s", code not in (200, None) and took < 5,
              f"status {code} after {took:.1f}s")
        for m in followers:
            cl.start_member(m)
        for m in MEMBERS:
            cl.wait_ready(m)
        cl.wait_balanced()
        code, _ = cl.add("idle-after", "http://node-3.grid:5555")
        got = cl.missing([("idle-before", "http://node-1.grid:5555"), ("idle-after", "http://node-3.grid:5555")])
        c("idle-leader: with the followers back the cluster serves again", code == 200 and not got,
          f"add {code}, missing {got}")
        before = sum(cl.log_size(m) for m in MEMBERS)
        for m in MEMBERS:
            cl.procs.signal(f"gridraft-{m}", signal.SIGTERM, wait=False)
        codes = [cl.proc(m).wait(timeout=60) for m in MEMBERS]
        stopped = sum(cl.log_size(m) for m in MEMBERS) - before
        c("idle-leader: SIGTERM of all three logs under 200 KB", stopped < 200_000,
          f"{stopped} bytes, exit codes {codes}")
    finally:
        cl.stop()
