#!/usr/bin/env python3
"""Checks docker/monitoring/ (run by scripts/check-monitoring.sh).

The alert rules must load (`promtool check rules`) and pass their unit tests (`promtool test
rules gridraft-alerts.test.yml`: each alert fires on its broken series, none on a healthy
cluster). Then every metric they and the dashboard use must be one gridraft exports:
it starts one real member (a single-member cluster that elects itself) with a Redis mirror that
cannot be reached and an event bus played by a minimal ZMTP publisher, drives one public request
and one request over an input limit, adds a learner at an address that answers some requests and
drops the others, then reads the `# TYPE` lines of its peer-port /metrics: a
labelled family is exported only once it has a series, and these steps give every family one.
Every `gridraft_*` name in the alert rules (expressions and annotations) and in the dashboard's
panel expressions must be among them (a histogram's `_bucket`, `_sum` and `_count` count as the
histogram); `up` is Prometheus's own. The dashboard must be JSON with the `DS_PROMETHEUS` input,
and its expressions must parse: they are checked by `promtool check rules` as recording rules.

Standard library only. Prints what it checks and ends with `N passed, M failed`.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster-tests"))
from zmtp import ZmtpError, _frame, _greeting, _ready  # noqa: E402

RULES = "docker/monitoring/gridraft-alerts.yml"
RULES_TEST = "docker/monitoring/gridraft-alerts.test.yml"
DASHBOARD = "docker/monitoring/gridraft-dashboard.json"
NAME = re.compile(r"\b(gridraft_[a-z0-9_]+|up)\b")
SECRET = "monitoring-check-secret"
PROMETHEUS_OWN = {"up"}


def log(msg):
    print(f"check-monitoring: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BusPublisher:
    """The bus's XPUB side as one member's SUB sees it: accepts the connection and publishes
    one Selenium-shaped message with a wrong registration secret (counted as `rejected`)."""

    def __init__(self, port):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(60)
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(30)
            conn.sendall(_greeting())
            greeting = b""
            while len(greeting) < 64:
                chunk = conn.recv(64 - len(greeting))
                if not chunk:
                    raise ZmtpError("subscriber closed during the handshake")
                greeting += chunk
            conn.sendall(_frame(_ready(b"PUB"), command=True))
            # The subscriber's READY and its subscription follow; a publisher may ignore them.
            time.sleep(0.5)
            frames = [b"session-closed", b"not-the-secret", b"00000000-0000-0000-0000-000000000001", b"{}"]
            conn.sendall(b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames)))
            self.conn = conn
        except (OSError, ZmtpError) as e:
            self.error = e

    def close(self):
        self.listener.close()


class SilentPeer:
    """A peer address for a learner that is not a gridraft member: it answers every other
    connection with a 404 and closes the rest unanswered, so the member's requests to it are
    both timed (answered) and counted as failures."""

    def __init__(self, port):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(1)
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        n = 0
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    if n % 2 == 0:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
                except OSError:
                    pass
            n += 1

    def close(self):
        self.closed = True
        self.listener.close()


def add_learner(peer_url, auth, learner_id, addr):
    """Asks the member to add a learner (the call waits for a catch-up that never comes, so it
    runs on a thread of its own and its answer is not read)."""
    body = json.dumps({"id": learner_id, "addr": addr}).encode()
    req = urllib.request.Request(f"{peer_url}/admin/add", data=body, method="POST",
                                 headers={**auth, "content-type": "application/json"})

    def call():
        try:
            urllib.request.urlopen(req, timeout=20).read()
        except OSError:
            pass

    threading.Thread(target=call, daemon=True).start()


def http_get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_until(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def exported_families(gridraft, workdir):
    """Runs one member and returns {family name: type} from its /metrics."""
    public, peer, bus = free_port(), free_port(), free_port()
    secret_file = os.path.join(workdir, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDRAFT_")}
    env["RUST_LOG"] = "warn"
    publisher = BusPublisher(bus)
    silent = None
    cmd = [gridraft, "serve", "--id", "1", "--members", f"1=127.0.0.1:{peer}",
           "--listen", f"127.0.0.1:{public}", "--peer-listen", f"127.0.0.1:{peer}",
           "--data-dir", os.path.join(workdir, "data"), "--cluster-secret-file", secret_file,
           "--publish-events", f"tcp://127.0.0.1:{bus}",
           "--subscribe-events", f"tcp://127.0.0.1:{free_port()}",
           "--registration-secret", "the-secret",
           # Nothing listens on port 1: the mirror stays down, and its series are exported.
           "--mirror-redis-url", "redis://127.0.0.1:1"]
    with open(os.path.join(workdir, "member.log"), "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{public}"
        auth = {"Authorization": f"Bearer {SECRET}"}
        wait_until("the member to be ready", lambda: http_get(f"{base}/readyz")[0] == 204)
        # One request over the session-id limit (1024 bytes by default).
        http_get(f"{base}/se/grid/session/{'x' * 2000}")

        def scrape():
            status, body = http_get(f"http://127.0.0.1:{peer}/metrics", auth)
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}: {body[:200]}")
            return dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))

        wait_until("the event-bus message to be counted",
                   lambda: "gridraft_event_bus_messages_total" in scrape())
        # A learner whose address answers some requests and drops the others: the member's
        # requests to a peer are timed and counted.
        silent = SilentPeer(free_port())
        add_learner(f"http://127.0.0.1:{peer}", auth, 2, f"127.0.0.1:{silent.listener.getsockname()[1]}")
        wait_until("requests to the learner to be timed and counted",
                   lambda: {"gridraft_peer_request_duration_seconds",
                            "gridraft_peer_request_failures_total"} <= scrape().keys())
        return scrape()
    except Exception:
        with open(os.path.join(workdir, "member.log")) as f:
            sys.stderr.write(f.read()[-4000:])
        if publisher.error:
            sys.stderr.write(f"bus publisher: {publisher.error}\n")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        publisher.close()
        if silent:
            silent.close()


def exported(name, families):
    if name in families or name in PROMETHEUS_OWN:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and families.get(base) == "histogram":
            return True
    return False


def dashboard_exprs(path):
    with open(path) as f:
        dash = json.load(f)
    inputs = [i.get("name") for i in dash.get("__inputs", [])]
    if "DS_PROMETHEUS" not in inputs:
        raise ValueError("the dashboard has no DS_PROMETHEUS input")
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                exprs.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return exprs


def check_dashboard_promql(exprs, workdir):
    """Each expression, with Grafana's variables filled in, as a recording rule for promtool."""
    path = os.path.join(workdir, "dashboard-exprs.yml")
    with open(path, "w") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (_, expr) in enumerate(exprs):
            expr = expr.replace("$__rate_interval", "1m").replace("$job", "gridraft")
            f.write(f"      - record: dashboard_panel_{i}\n        expr: {json.dumps(expr)}\n")
    r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gridraft", default="target/debug/gridraft")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    passed = failed = 0

    def result(ok, what, detail=""):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        log(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")

    workdir = tempfile.mkdtemp(prefix="gridraft-monitoring-")
    try:
        for what, cmd, cwd in [
            ("promtool check rules", ["promtool", "check", "rules", RULES], "."),
            ("promtool test rules", ["promtool", "test", "rules", os.path.basename(RULES_TEST)],
             os.path.dirname(RULES_TEST)),
        ]:
            r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
            print((r.stdout + r.stderr).rstrip(), flush=True)
            result(r.returncode == 0, what)

        exprs = dashboard_exprs(DASHBOARD)
        result(True, f"the dashboard parses: {len(exprs)} panel expressions, DS_PROMETHEUS input")
        ok, out = check_dashboard_promql(exprs, workdir)
        result(ok, "the dashboard's expressions parse as PromQL", "" if ok else out)

        families = exported_families(args.gridraft, workdir)
        ours = sorted(n for n in families if n.startswith("gridraft_"))
        log(f"a running member exports {len(ours)} gridraft families: {' '.join(ours)}")

        with open(RULES) as f:
            rule_names = set(NAME.findall(f.read()))
        missing = sorted(n for n in rule_names if not exported(n, families))
        result(not missing, f"{len(rule_names)} metric names in {RULES} are exported",
               "not exported: " + ", ".join(missing) if missing else "")

        dash_missing = sorted({f"{n} (panel {title!r})" for title, e in exprs
                               for n in NAME.findall(e) if not exported(n, families)})
        dash_names = {n for _, e in exprs for n in NAME.findall(e)}
        result(not dash_missing, f"{len(dash_names)} metric names in {DASHBOARD} are exported",
               "not exported: " + ", ".join(dash_missing) if dash_missing else "")
    except Exception as e:  # the summary line must still come
        result(False, "the check ran", f"{type(e).__name__}: {e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
