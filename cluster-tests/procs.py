"""Local processes for the tests that run real gridraft members on 127.0.0.1 (grid_e2e.py,
grid_reconcile.py, hardening.py; the Selenium Grid itself is in selenium_grid.py): start and stop processes with their logs in one directory, haproxy in front of
the members' public ports, JSON over HTTP, waiting with a timeout, and PASS/FAIL counting.

Standard library only.
"""

import collections
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Results:
    """PASS/FAIL lines and the closing `N passed, M failed`."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            log(f"PASS {name}" + (f" ({detail})" if detail else ""))
        else:
            self.failed += 1
            log(f"FAIL {name} {detail}")
        return ok

    def summary(self):
        return f"{self.passed} passed, {self.failed} failed"


# The TLS context `http` uses for https URLs (a tier that serves HTTPS sets it to trust its CA).
TLS_CONTEXT = None
# With peer TLS: the context (CA and a client certificate) `admin_status` reaches peer ports with.
PEER_TLS_CONTEXT = None


def http(method, url, body=None, headers=None, timeout=60, raw_body=None):
    """One request; returns (status, decoded JSON or text). `raw_body` sends bytes as they are."""
    data = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=TLS_CONTEXT) as r:
            raw = r.read()
            return r.status, _decode(raw)
    except urllib.error.HTTPError as e:
        return e.code, _decode(e.read())


def _decode(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def wait_until(what, fn, timeout=120, interval=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the service is starting
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what} (last: {last})")


class Procs:
    """Named child processes, each in its own process group, output appended to
    `<logdir>/<name>.log`."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = {}

    def log_path(self, name):
        return os.path.join(self.logdir, f"{name}.log")

    def start(self, name, args, env=None):
        with open(self.log_path(name), "ab") as out:
            self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
        return self.procs[name]

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def signal(self, name, sig, wait=True, timeout=30):
        """Signals the process (not its group: a wrapper such as prlimit execs the member) and
        returns its exit status when `wait`."""
        p = self.procs[name]
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
        if wait:
            return p.wait(timeout=timeout)
        return None

    def stop_all(self, timeout=15):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def print_tails(self, lines=25):
        print_tails(self.logdir, lines)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def print_tails(logdir, lines=25, width=400):
    """The last lines of every log in `logdir`, each cut at `width` characters."""
    if not os.path.isdir(logdir):
        return
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), errors="replace") as f:
            tail = [ANSI.sub("", line) for line in collections.deque(f, maxlen=lines)]
        tail = [line if len(line) <= width else line[:width] + " ...\n" for line in tail]
        print(f"----- tail of {name}\n" + "".join(tail), flush=True)


def member_args(binary, mid, members, workdir, data_dir=None, extra=()):
    """`gridraft serve` for member `mid` of `members` ({id: (public port, peer port)})."""
    public, peer = members[mid]
    peers = ",".join(f"{i}=127.0.0.1:{p[1]}" for i, p in members.items())
    return [binary, "serve", "--id", str(mid), "--listen", f"127.0.0.1:{public}",
            "--peer-listen", f"127.0.0.1:{peer}",
            "--data-dir", data_dir or os.path.join(workdir, f"m{mid}"),
            "--members", peers, "--cluster-secret-file", os.path.join(workdir, "cluster-secret"),
            *extra]


def make_certs(workdir):
    """A CA and a certificate for localhost and 127.0.0.1 signed by it, made with openssl in
    `workdir`; returns (ca.crt, member.crt, member.key). Nothing is kept after the tier."""
    ca_key, ca_crt = os.path.join(workdir, "ca.key"), os.path.join(workdir, "ca.crt")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *EC_KEY, "-days", "2", "-subj", "/CN=gridraft test CA", "-keyout", ca_key, "-out", ca_crt)
    crt, key = make_leaf(workdir, "member")
    return ca_crt, crt, key


# A new P-256 key without a passphrase.
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_leaf(workdir, stem):
    """A new key and a certificate for localhost and 127.0.0.1, signed by the CA `make_certs`
    made in `workdir`, usable by a server and as a client certificate (a member's peer
    certificate is both); written as `<stem>.crt` and `<stem>.key`, whose paths it returns."""
    ca_key, ca_crt = os.path.join(workdir, "ca.key"), os.path.join(workdir, "ca.crt")
    key, csr, crt = (os.path.join(workdir, f"{stem}.{ext}") for ext in ("key", "csr", "crt"))
    ext = os.path.join(workdir, f"{stem}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", *EC_KEY, "-subj", f"/CN=gridraft {stem}", "-keyout", key, "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", crt)
    return crt, key


def cert_der(path):
    """The DER bytes of the first certificate in the PEM file `path`."""
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def presented_cert(port, context):
    """The DER certificate a TLS port on 127.0.0.1 presents to a new connection made with
    `context`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def member_env():
    return dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "gridraft=info,openraft=warn"))


def admin_status(peer_port, secret, timeout=5):
    scheme = "https" if PEER_TLS_CONTEXT else "http"
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{peer_port}/admin/status",
                                 headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(req, timeout=timeout, context=PEER_TLS_CONTEXT) as r:
        return json.loads(r.read())


def find_leader(peer_ports, secret):
    """The leader some reachable member names, or None."""
    for port in peer_ports:
        try:
            s = admin_status(port, secret, timeout=2)
            if s.get("leader"):
                return s["leader"]
        except Exception:  # noqa: BLE001 - the member may be down
            pass
    return None


HAPROXY_CFG = """
global
    maxconn 4096
{stats}
defaults
    mode http
    timeout connect 1s
    timeout client 120s
    timeout server 60s
    timeout http-request 30s
    retries 5
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request
frontend vip
    bind 127.0.0.1:{vip}
    default_backend gridraft
backend gridraft
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 204
{servers}
"""


# The TLS variant: TCP mode (TLS passes through to the members), the same checks over TLS.
HAPROXY_TLS_CFG = (HAPROXY_CFG.replace("mode http", "mode tcp")
                   .replace("    timeout http-request 30s\n", "")
                   .replace("    retry-on conn-failure empty-response response-timeout\n", "")
                   .replace("    option http-buffer-request\n", ""))


def write_haproxy_tls_cfg(path, vip, public_ports, ca_file, check="inter 300ms fall 2 rise 1"):
    """haproxy passing TLS through to HTTPS public ports ({id: port}), checking /readyz over TLS
    against the members' CA (204 = ready)."""
    servers = "\n".join(f"    server m{mid} 127.0.0.1:{port} check check-ssl verify required ca-file {ca_file} {check}"
                        for mid, port in public_ports.items())
    with open(path, "w") as f:
        f.write(HAPROXY_TLS_CFG.format(vip=vip, servers=servers, stats=""))


def write_haproxy_cfg(path, vip, public_ports, check="inter 300ms fall 2 rise 1", stats_socket=None):
    """haproxy in front of the public ports ({id: port}), checking /readyz (204 = ready)."""
    servers = "\n".join(f"    server m{mid} 127.0.0.1:{port} check {check}" for mid, port in public_ports.items())
    stats = f"    stats socket {stats_socket} mode 600 level admin" if stats_socket else ""
    with open(path, "w") as f:
        f.write(HAPROXY_CFG.format(vip=vip, servers=servers, stats=stats))


def haproxy_server_states(stats_socket):
    """{server name: status} from haproxy's stats socket, e.g. {"m1": "UP", "m3": "DOWN"}."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(stats_socket)
        s.sendall(b"show stat\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    states = {}
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == "gridraft" and row.get("svname") not in ("BACKEND", "FRONTEND", None):
            states[row["svname"]] = row.get("status", "")
    return states
