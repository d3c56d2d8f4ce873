"""Control of the docker compose cluster (docker/compose.yaml): start and stop it, find the
leader through each member's peer port, and inject faults with the docker CLI.

Works with `docker-compose` 1.29 and `docker compose` v2. Only the project's own containers
and networks are touched; the harness reaches members on their `grid` network addresses and
the VIP on 127.0.0.1. With TLS (docker/compose.tls.yaml) the peer port's admin routes are read
over mutual TLS (`PeerTls`).
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

MEMBERS = (1, 2, 3)
PEER_PORT = 7556
PUBLIC_PORT = 5556


def now():
    return time.monotonic()


def compose_command():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class DockerError(RuntimeError):
    pass


class PeerTls:
    """Mutual TLS to members' peer ports: trusts `ca_file` and presents `cert_file`/`key_file`
    (a member's pair, which carries clientAuth).

    The harness reaches member N at its container address, which its certificate does not
    name. Rather than turning hostname checking off, the TLS session is opened on that address
    with `peer-N` as the name to check (SNI and verification): the certificate must chain to
    the CA *and* be member N's, the check the members themselves make on each other."""

    def __init__(self, ca_file, cert_file, key_file):
        self.context = ssl.create_default_context(cafile=ca_file)
        self.context.load_cert_chain(cert_file, key_file)

    def connection(self, m, ip, port, timeout):
        return _NamedHTTPSConnection(ip, f"peer-{m}", port, self.context, timeout)


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address`, checking the certificate against `name` instead of the address."""

    def __init__(self, address, name, port, context, timeout):
        super().__init__(name, port, context=context, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def docker(*args, check=True, timeout=120):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise DockerError(f"docker {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


class Cluster:
    def __init__(self, project, compose_files, secret, env, log, peer_tls=None):
        """`compose_files`: one path or a list (base file first, then overrides); `peer_tls`:
        a PeerTls when the members' peer ports require mutual TLS."""
        self.project = project
        self.compose_files = [compose_files] if isinstance(compose_files, str) else list(compose_files)
        self.secret = secret
        self.peer_tls = peer_tls
        self.env = dict(os.environ, **env)
        self.log = log
        self.ids = {}      # member id -> container id
        self.ips = {}      # member id -> address on the grid network
        self.paused = set()
        self.down_members = set()
        self.cut = set()

    # ---- compose ---------------------------------------------------------------------------
    def compose(self, *args, timeout=300):
        files = [a for f in self.compose_files for a in ("-f", f)]
        cmd = compose_command() + ["-p", self.project, *files, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        if r.returncode != 0:
            raise DockerError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout

    def up(self):
        self.down()
        self.compose("up", "-d", "--force-recreate", "--renew-anon-volumes")
        for m in MEMBERS:
            cid = self.compose("ps", "-q", f"gridraft-{m}").strip()
            if not cid:
                raise DockerError(f"no container for gridraft-{m}")
            self.ids[m] = cid
        self.refresh_ips()

    def down(self):
        # Unpause first: a paused container cannot be stopped.
        for m in list(self.paused):
            docker("unpause", self.ids[m], check=False)
        self.paused.clear()
        self.compose("down", "-v", "--remove-orphans", "-t", "5")

    def network(self, suffix):
        return f"{self.project}_{suffix}"

    def refresh_ips(self, members=MEMBERS):
        for m in members:
            raw = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", self.ids[m])
            nets = json.loads(raw) or {}
            ip = (nets.get(self.network("grid")) or {}).get("IPAddress")
            if ip:
                self.ips[m] = ip

    def container_name(self, m):
        return docker("inspect", "-f", "{{.Name}}", self.ids[m]).strip().lstrip("/")

    def haproxy_id(self):
        return self.compose("ps", "-q", "haproxy").strip()

    # ---- observation -----------------------------------------------------------------------
    def status(self, m, timeout=1.0):
        """The member's /admin/status, or None when it does not answer."""
        if m in self.paused or m in self.down_members or m not in self.ips:
            return None
        headers = {"Authorization": f"Bearer {self.secret}"}
        if self.peer_tls:
            conn = self.peer_tls.connection(m, self.ips[m], PEER_PORT, timeout)
        else:
            conn = http.client.HTTPConnection(self.ips[m], PEER_PORT, timeout=timeout)
        try:
            conn.request("GET", "/admin/status", headers=headers)
            r = conn.getresponse()
            body = r.read()
            return json.loads(body) if r.status == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def statuses(self):
        return {m: self.status(m) for m in MEMBERS}

    def leader(self, among=MEMBERS):
        """The member that believes it leads with the highest term, among those that answer."""
        best = None
        for m in among:
            s = self.status(m)
            if s and s.get("leader") == m and (best is None or s["term"] > best[1]):
                best = (m, s["term"])
        return best[0] if best else None

    def wait_leader(self, among=MEMBERS, exclude=(), timeout=30):
        deadline = now() + timeout
        while now() < deadline:
            lead = self.leader(among)
            if lead is not None and lead not in exclude:
                return lead
            time.sleep(0.05)
        raise TimeoutError(f"no leader among {among} (excluding {exclude}) within {timeout}s")

    def wait_stable(self, timeout=90):
        """All three members answer, agree on one leader, report ready and have applied the
        same index. Returns the leader."""
        deadline = now() + timeout
        last = None
        while now() < deadline:
            st = self.statuses()
            last = st
            if all(st.values()):
                leaders = {s.get("leader") for s in st.values()}
                applied = {s.get("last_applied") for s in st.values()}
                if len(leaders) == 1 and None not in leaders and all(s.get("ready") for s in st.values()) \
                        and len(applied) == 1:
                    return leaders.pop()
            time.sleep(0.2)
        summary = {m: (s and {k: s.get(k) for k in ("state", "term", "leader", "last_applied", "ready")})
                   for m, s in (last or {}).items()}
        raise TimeoutError(f"cluster not stable within {timeout}s: {summary}")

    def logs(self, m):
        r = subprocess.run(["docker", "logs", self.ids[m]], capture_output=True, text=True,
                           errors="replace", timeout=120)
        return r.stdout + r.stderr

    def haproxy_logs(self):
        hid = self.haproxy_id()
        if not hid:
            return ""
        r = subprocess.run(["docker", "logs", hid], capture_output=True, text=True, errors="replace", timeout=60)
        return r.stdout + r.stderr

    # ---- faults ----------------------------------------------------------------------------
    def kill(self, m):
        docker("kill", "-s", "KILL", self.ids[m])
        self.down_members.add(m)

    def start(self, m):
        docker("start", self.ids[m])
        self.down_members.discard(m)
        self.refresh_ips([m])

    def restart(self, m, grace=20):
        self.down_members.add(m)
        try:
            docker("restart", "-t", str(grace), self.ids[m], timeout=grace + 60)
        finally:
            self.down_members.discard(m)
            self.refresh_ips([m])

    def pause(self, m):
        # runc's cgroup freeze can fail transiently ("unable to freeze") while a process is in
        # an uninterruptible sleep (an fsync under load); runc thaws it again, so retry.
        for attempt in range(5):
            try:
                docker("pause", self.ids[m])
                break
            except DockerError as e:
                if "unable to freeze" not in str(e) or attempt == 4:
                    raise
                self.log(f"  docker pause of member {m} failed ({e}); retrying")
                time.sleep(0.2)
        self.paused.add(m)

    def unpause(self, m):
        docker("unpause", self.ids[m])
        self.paused.discard(m)

    def disconnect(self, m):
        """Cuts the member off the raft network: no Raft, forwarding or ReadIndex traffic to or
        from it. The VIP still reaches its public port (the worst case for stale reads)."""
        docker("network", "disconnect", self.network("raft"), self.ids[m])
        self.cut.add(m)

    def connect(self, m):
        docker("network", "connect", "--alias", f"peer-{m}", "--alias", f"gridraft-{m}",
               self.network("raft"), self.ids[m])
        self.cut.discard(m)

    def heal_all(self):
        """Undoes every fault still in place (used between rounds and on errors)."""
        for m in list(self.paused):
            self.unpause(m)
        for m in list(self.cut):
            self.connect(m)
        for m in list(self.down_members):
            self.start(m)
