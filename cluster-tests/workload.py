"""A Grid-shaped workload through the VIP, recording every operation.

Each session client repeats the life of a Grid session: add (the distributor's POST), several
full GETs (the router, once per WebDriver command), a /uri GET (a WebSocket connect), sometimes
a re-add with another node URI, then a DELETE and a GET that must miss; some sessions are left
running, some removed ids are added again later. Reader clients look up other clients' recent
sessions, so a stale read is visible across clients too.

Every operation is recorded with its invocation and completion times (one monotonic clock) and
an outcome:
  ok       200 (or, for reads, a 404 `invalid session id`: the session is absent)
  failed   an error answer (any other status), or the VIP refused the connection
  unknown  no answer: the client timed out or the connection broke mid-request
For the checker, failed and unknown writes are indeterminate (they may take effect later, e.g.
a 500 after gridraft's write timeout while the entry is still in a leader's log); failed and
unknown reads are dropped.
"""

import collections
import http.client
import json
import random
import socket
import threading
import time

from linearizability import Op

INF = float("inf")


def now():
    return time.monotonic()


class History:
    def __init__(self):
        self.ops = []
        self.lock = threading.Lock()
        self.next_id = 0

    def record(self, **fields):
        with self.lock:
            fields["id"] = self.next_id
            self.next_id += 1
            self.ops.append(fields)
            return fields

    def snapshot(self):
        with self.lock:
            return list(self.ops)


def session_body(key, uri, seq, client):
    """A Selenium-shaped session; the URI is repeated in the capabilities so a torn record
    (capabilities from one add, URI from another) is detectable."""
    return {
        "sessionId": key,
        "uri": uri,
        "start": "2026-11-28T10:20:30.123400Z",
        "capabilities": {
            "browserName": "chrome",
            "browserVersion": "142.0",
            "platformName": "linux",
            "acceptInsecureCerts": False,
            "se:cdp": f"ws://router:4444/session/{key}/se/cdp",
            "timeouts": {"implicit": 0, "pageLoad": 300000, "script": 30000},
            "gridraft:test": {"uri": uri, "seq": seq, "client": client},
        },
        "stereotype": {"browserName": "chrome", "platformName": "linux", "se:noVncPort": 7900},
    }


class Vip:
    """One request per connection (Connection: close), so a broken keep-alive connection never
    blurs an outcome. With an ssl context, HTTPS: `host` must be a name the VIP's certificate
    carries (docker/make-certs.sh's covers 127.0.0.1 and localhost), the name is checked."""

    def __init__(self, host, port, timeout, context=None):
        self.host, self.port, self.timeout, self.context = host, port, timeout, context

    def request(self, method, path, body=None):
        """Returns (status, body bytes) or raises OSError/socket.timeout (ssl.SSLError is an
        OSError: a TLS failure is an unknown outcome, like a broken connection)."""
        if self.context is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        try:
            data = None if body is None else json.dumps(body).encode()
            # Like the Java client: no Content-Type on the POST.
            headers = {"Connection": "close"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def classify_error(e):
    if isinstance(e, ConnectionRefusedError):
        return "failed", "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "unknown", "timeout"
    return "unknown", type(e).__name__


class Workload:
    def __init__(self, vip, history, round_name, clients=6, readers=2, seed=0):
        self.vip = vip
        self.history = history
        self.round = round_name
        self.clients = clients
        self.readers = readers
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.threads = []
        self.recent = collections.deque(maxlen=300)
        self.keys = set()
        self.lock = threading.Lock()

    # ---- one operation ---------------------------------------------------------------------
    def op(self, client, key, kind, value=None):
        with self.lock:
            self.keys.add(key)
        invoke = now()
        path = "/se/grid/session"
        outcome, output, status, detail = "unknown", None, None, ""
        try:
            if kind == "add":
                status, raw = self.vip.request("POST", path, value)
            elif kind == "remove":
                status, raw = self.vip.request("DELETE", f"{path}/{key}")
            elif kind == "get":
                status, raw = self.vip.request("GET", f"{path}/{key}")
            else:
                status, raw = self.vip.request("GET", f"{path}/{key}/uri")
            outcome, output, detail = self.interpret(kind, key, status, raw)
        except OSError as e:
            outcome, detail = classify_error(e)
        complete = now()
        return self.history.record(
            round=self.round, client=client, key=key, kind=kind,
            value=value["uri"] if kind == "add" else None, output=output,
            invoke=invoke, complete=complete, outcome=outcome, status=status, detail=detail)

    @staticmethod
    def interpret(kind, key, status, raw):
        """(outcome, output, detail) of an answer."""
        if kind in ("add", "remove"):
            if status == 200:
                return "ok", None, ""
            return "failed", None, raw[:160].decode(errors="replace")
        if status == 404:
            try:
                err = json.loads(raw)["value"]["error"]
            except (ValueError, KeyError, TypeError):
                err = None
            if err == "invalid session id":
                return "ok", None, ""
            return "failed", None, raw[:160].decode(errors="replace")
        if status != 200:
            return "failed", None, raw[:160].decode(errors="replace")
        try:
            value = json.loads(raw)["value"]
        except (ValueError, KeyError, TypeError):
            return "corrupt", None, "undecodable body: " + raw[:160].decode(errors="replace")
        if kind == "uri":
            return "ok", value, ""
        uri = value.get("uri")
        marker = value.get("capabilities", {}).get("gridraft:test", {}).get("uri")
        if value.get("sessionId") != key or marker != uri:
            return "corrupt", uri, f"torn record: sessionId={value.get('sessionId')!r} uri={uri!r} caps uri={marker!r}"
        return "ok", uri, ""

    # ---- clients ---------------------------------------------------------------------------
    def session_client(self, cid, rng):
        n = 0
        while not self.stop_event.is_set():
            n += 1
            key = f"{self.round}-c{cid}-{n}"
            seq = 0

            def add():
                nonlocal seq
                seq += 1
                uri = f"http://node-{cid}.grid:5555/{key}/v{seq}"
                return self.op(cid, key, "add", session_body(key, uri, seq, cid))["outcome"] == "ok"

            def read(kind="get"):
                return self.op(cid, key, kind)["outcome"] in ("ok",)

            if not add():
                self.backoff()
                continue
            with self.lock:
                self.recent.append(key)
            steps_ok = all(read() for _ in range(rng.randint(2, 4))) and read("uri")
            if not steps_ok or self.stop_event.is_set():
                continue
            if rng.random() < 0.3 and not (add() and read()):
                continue
            if rng.random() < 0.2:
                continue  # a long-running session: left in the map
            if self.op(cid, key, "remove")["outcome"] != "ok":
                self.backoff()
                continue
            read()
            if rng.random() < 0.2:
                # The same id comes back (a re-add after removal), and may stay.
                if add() and read() and rng.random() < 0.5:
                    self.op(cid, key, "remove")

    def reader_client(self, cid, rng):
        while not self.stop_event.is_set():
            with self.lock:
                key = rng.choice(self.recent) if self.recent else None
            if key is None:
                time.sleep(0.05)
                continue
            r = self.op(cid, key, rng.choice(["get", "get", "uri"]))
            if r["outcome"] != "ok":
                self.backoff()

    def backoff(self):
        # After an error, do not spin: the cluster is probably electing or unavailable.
        self.stop_event.wait(0.1)

    def start(self):
        for i in range(self.clients):
            rng = random.Random(self.rng.random())
            self.threads.append(threading.Thread(target=self.session_client, args=(i, rng), daemon=True))
        for i in range(self.readers):
            rng = random.Random(self.rng.random())
            self.threads.append(threading.Thread(target=self.reader_client, args=(f"r{i}", rng), daemon=True))
        for t in self.threads:
            t.start()

    def stop(self, timeout=60):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)
        return [t for t in self.threads if t.is_alive()]

    def final_reads(self, workers=8):
        """After the round: reads every key the round touched, retrying errors, so that lost
        writes and resurrected sessions show up in the history."""
        keys = sorted(self.keys)
        todo = collections.deque(keys)
        lock = threading.Lock()
        result = {}

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    key = todo.popleft()
                for _ in range(20):
                    r = self.op("final", key, "get")
                    if r["outcome"] in ("ok", "corrupt"):
                        result[key] = r
                        break
                    time.sleep(0.25)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return result


def to_ops(records):
    """History records -> checker operations (failed/unknown writes are indeterminate, failed
    and unknown reads are dropped)."""
    ops = []
    for r in records:
        if r["kind"] in ("get", "uri"):
            if r["outcome"] not in ("ok", "corrupt"):
                continue
            complete = r["complete"]
        else:
            complete = r["complete"] if r["outcome"] == "ok" else INF
        ops.append(Op(r["key"], r["kind"], r["invoke"], complete, value=r["value"], output=r["output"],
                      client=r["client"], id=r["id"],
                      extra={"outcome": r["outcome"], "detail": r.get("detail", ""),
                             "answered": r["complete"]}))
    return ops
