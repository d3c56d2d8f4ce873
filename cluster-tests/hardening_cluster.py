"""The fault tier's cluster: three real `gridraft serve` processes on 127.0.0.1 behind haproxy
(checking `GET /readyz`, inter 500ms, fall 2, rise 2, with a stats socket to see which members
it uses), plus what the scenarios measure on them: a member's log bytes, CPU ticks, peak RSS,
open connections, Raft status, and a Grid-shaped load through the VIP that records every
acknowledged add.

Ports: public 1656x, peer 1856x, VIP 16556 (no other test uses them).
"""

import json
import os
import random
import re
import select
import signal
import socket
import threading
import time
import uuid

from procs import ANSI, Procs, admin_status, find_leader, haproxy_server_states, http, member_args, member_env, \
    wait_until, write_haproxy_cfg
from workload import session_body

MEMBERS = {1: (16561, 18561), 2: (16562, 18562), 3: (16563, 18563)}
VIP = 16556
CLUSTER_SECRET = "hardening-cluster-secret-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Cluster:
    """One scenario's cluster in `<root>/<name>/`: data dirs m1..m3 (or the ones given), logs/."""

    def __init__(self, name, binary, root, data_dirs=None, extra=()):
        self.name, self.binary = name, binary
        self.dir = os.path.join(root, name)
        self.logdir = os.path.join(self.dir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.procs = Procs(self.logdir)
        self.data_dirs = {mid: (data_dirs or {}).get(mid) or os.path.join(self.dir, f"m{mid}") for mid in MEMBERS}
        self.extra = list(extra)
        self.stats_socket = os.path.join(self.dir, "haproxy.sock")
        with open(os.path.join(self.dir, "cluster-secret"), "w") as f:
            f.write(CLUSTER_SECRET)

    # --- processes -------------------------------------------------------------------------

    def start(self):
        for mid in MEMBERS:
            self.start_member(mid)
        cfg = os.path.join(self.dir, "haproxy.cfg")
        write_haproxy_cfg(cfg, VIP, {mid: p[0] for mid, p in MEMBERS.items()},
                          check="inter 500ms fall 2 rise 2", stats_socket=self.stats_socket)
        self.procs.start("haproxy", ["haproxy", "-db", "-f", cfg])
        for mid in MEMBERS:
            self.wait_ready(mid)
        self.wait_balanced()

    def wait_balanced(self, timeout=30):
        """Until haproxy sends requests to every member."""
        wait_until("haproxy to use every member", lambda: list(self.balancer().values()) == ["UP"] * 3,
                   timeout=timeout)

    def start_member(self, mid, prefix=()):
        args = [*prefix, *member_args(self.binary, mid, MEMBERS, self.dir, self.data_dirs[mid], self.extra)]
        return self.procs.start(f"gridraft-{mid}", args, member_env())

    def stop(self):
        self.procs.stop_all()

    def proc(self, mid):
        return self.procs.procs[f"gridraft-{mid}"]

    def pid(self, mid):
        return self.proc(mid).pid

    def alive(self, mid):
        return self.procs.alive(f"gridraft-{mid}")

    def kill(self, mid, sig=signal.SIGKILL, timeout=30):
        return self.procs.signal(f"gridraft-{mid}", sig, timeout=timeout)

    def wait_ready(self, mid, timeout=60):
        wait_until(f"member {mid} ready", lambda: self.ready(mid) == 204, timeout=timeout)

    # --- observing --------------------------------------------------------------------------

    def public(self, mid):
        return f"http://127.0.0.1:{MEMBERS[mid][0]}"

    @staticmethod
    def vip():
        return f"http://127.0.0.1:{VIP}"

    def ready(self, mid):
        try:
            return http("GET", f"{self.public(mid)}/readyz", timeout=5)[0]
        except OSError:
            return None

    def status(self, mid):
        return admin_status(MEMBERS[mid][1], CLUSTER_SECRET)

    def leader(self, among=None):
        return find_leader([MEMBERS[m][1] for m in (among or MEMBERS) if self.alive(m)], CLUSTER_SECRET)

    def wait_leader(self, among=None, timeout=30):
        return wait_until("a leader", lambda: self.leader(among), timeout=timeout)

    def balancer(self):
        """{member id: haproxy status}."""
        return {int(k[1:]): v for k, v in haproxy_server_states(self.stats_socket).items()}

    def log_path(self, mid):
        return self.procs.log_path(f"gridraft-{mid}")

    def log_size(self, mid):
        return os.path.getsize(self.log_path(mid))

    def log_text(self, mid, since=0):
        with open(self.log_path(mid), "rb") as f:
            f.seek(since)
            return ANSI.sub("", f.read().decode(errors="replace"))

    def cpu_ticks(self, mid):
        with open(f"/proc/{self.pid(mid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def peak_rss_kib(self, mid):
        with open(f"/proc/{self.pid(mid)}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def metrics(self, mid):
        code, text = http("GET", f"http://127.0.0.1:{MEMBERS[mid][1]}/metrics",
                          headers={"Authorization": f"Bearer {CLUSTER_SECRET}"}, timeout=5)
        return text if code == 200 and isinstance(text, str) else ""

    def segments(self, mid):
        """{segment file name: size} of the member's Raft log."""
        logdir = os.path.join(self.data_dirs[mid], "log")
        return {n: os.path.getsize(os.path.join(logdir, n)) for n in sorted(os.listdir(logdir))}

    # --- the Grid's requests ----------------------------------------------------------------

    def add(self, sid, uri, base=None, timeout=30):
        return http("POST", f"{base or self.vip()}/se/grid/session", session_body(sid, uri, 0, 0), timeout=timeout)

    def uri_of(self, sid, base=None, timeout=30):
        return http("GET", f"{base or self.vip()}/se/grid/session/{sid}/uri", timeout=timeout)

    def delete(self, sid, base=None, timeout=30):
        return http("DELETE", f"{base or self.vip()}/se/grid/session/{sid}", timeout=timeout)

    def missing(self, sessions, mid=None):
        """The (sid, uri) pairs not found with their URI (on member `mid`, else the VIP)."""
        base = self.public(mid) if mid else None
        lost = []
        for sid, uri in sessions:
            try:
                code, body = self.uri_of(sid, base)
            except OSError as e:
                code, body = None, repr(e)
            if code != 200 or not isinstance(body, dict) or body.get("value") != uri:
                lost.append((sid, code))
        return lost


def post_body(port, path, body, timeout=120):
    """POSTs `body` bytes on one connection while watching for an early answer: a server may
    refuse an oversized body after its headers and close without reading the rest, so sending
    stops as soon as the answer starts. Returns (status, decoded JSON or text) or (None, error)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            view, sent = memoryview(body), 0
            while sent < len(body) and time.monotonic() < deadline:
                readable, writable, _ = select.select([s], [s], [], 1)
                if readable:
                    break
                if writable:
                    try:
                        sent += s.send(view[sent:sent + (1 << 16)])
                    except OSError:
                        break
            return read_answer(s, deadline)
    except OSError as e:
        return None, repr(e)


def read_answer(s, deadline):
    """Reads one HTTP answer until its Content-Length or the connection's end."""
    data = b""
    s.settimeout(1)
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if sep and length and len(rest) >= int(length.group(1)):
            break
    head, _, rest = data.partition(b"\r\n\r\n")
    status = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not status:
        return None, f"no HTTP answer ({len(data)} bytes)"
    try:
        return int(status.group(1)), json.loads(rest) if rest else None
    except ValueError:
        return int(status.group(1)), rest[:300].decode(errors="replace")


class Load:
    """Grid-shaped load through the VIP: each thread adds a session, looks up acknowledged ones
    (full record and /uri), and removes some. Every acknowledged add that was not removed is in
    `acked`; every failed lookup is in `failed_lookups` with its time."""

    def __init__(self, cluster, threads=3, prefix="load"):
        self.c, self.threads, self.prefix = cluster, threads, prefix
        self.acked = {}
        self.failed_lookups = []
        self.lookups = 0
        self.adds = self.failed_adds = 0
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.workers = []

    def start(self):
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self.workers.append(t)

    def stop(self):
        self.stop_flag.set()
        for t in self.workers:
            t.join(timeout=60)

    def _run(self, n):
        rng = random.Random(n)
        seq = 0
        while not self.stop_flag.is_set():
            seq += 1
            sid = f"{self.prefix}-{n}-{seq}-{uuid.uuid4().hex[:8]}"
            uri = f"http://node-{rng.randint(1, 9)}.grid:5555"
            try:
                code, _ = self.c.add(sid, uri, timeout=20)
            except OSError:
                code = None
            with self.lock:
                self.adds += 1
                if code == 200:
                    self.acked[sid] = uri
                else:
                    self.failed_adds += 1
            for _ in range(3):
                self._lookup(rng)
            if seq % 4 == 0:
                self._remove(rng)

    def _lookup(self, rng):
        with self.lock:
            if not self.acked:
                return
            sid = rng.choice(list(self.acked))
            uri = self.acked[sid]
        t = time.monotonic()
        try:
            code, body = self.c.uri_of(sid, timeout=20)
            ok = code == 200 and body.get("value") == uri
        except (OSError, AttributeError) as e:
            code, ok = repr(e), False
        with self.lock:
            # A session removed meanwhile by another thread is not a failed lookup.
            if sid not in self.acked:
                return
            self.lookups += 1
            if not ok:
                self.failed_lookups.append((t, sid, code))

    def _remove(self, rng):
        with self.lock:
            if not self.acked:
                return
            sid = rng.choice(list(self.acked))
            # Removed from the expectations before the DELETE: its outcome may be unknown.
            del self.acked[sid]
        try:
            self.c.delete(sid, timeout=20)
        except OSError:
            pass

    def failed_since(self, t):
        with self.lock:
            return [f for f in self.failed_lookups if f[0] >= t]
