#!/usr/bin/env python3
"""End to end: a real distributed Selenium Grid (event-bus, sessionqueue, distributor, router and
a node driving Debian's headless chromium) whose session map is a three-member gridraft cluster
behind haproxy (checking /readyz). Creates real browser sessions, runs WebDriver commands, checks
the session map on every member, quits, checks the sessions leave the map through the
`session-closed` event; then does it again while the gridraft leader is killed with SIGKILL.

With `--tls` the members' public ports serve HTTPS only and their peer ports require mutual TLS
(a CA and a certificate per member made with openssl at start), haproxy passes TLS through and
checks /readyz over TLS, and the router and the distributor reach the map at https://… with the CA
in a Java trust store (keytool). A last phase renews every member's certificate, one member after
the other, while the Grid runs WebDriver commands and starts sessions: no request may fail, and
each port presents the new certificate to new connections.

Ends with a line `N passed, M failed`; exits non-zero when anything failed.
Only 127.0.0.1 is used.
"""

import os
import signal
import ssl
import subprocess
import threading
import time
import traceback
import urllib.request

import procs as procs_module
from procs import Procs, Results, cert_der, find_leader, http, log, make_certs, make_leaf, member_args, \
    member_env, presented_cert, wait_until, write_haproxy_cfg, write_haproxy_tls_cfg
from selenium_grid import Ports, bus_args, check_logs_have_no_panic, finish, new_session as grid_new_session, \
    start_grid, tier_arguments, tier_dirs

SECRET = "e2e-registration-secret"
CLUSTER_SECRET = "e2e-cluster-secret"
PORTS = Ports(bus_pub=14442, bus_sub=14443, bus_http=15557, queue=15559, distributor=15553, router=14444,
              node=15555)
ROUTER = PORTS.router
VIP = 15556
MEMBERS = {1: (15561, 17561), 2: (15562, 17562), 3: (15563, 17563)}
PAGE = "data:text/html,<html><head><title>gridraft e2e</title></head><body><p id='greeting'>hello grid</p></body></html>"

results = Results()
procs = None
# "http" or "https": the scheme of the members' public ports and the VIP.
SCHEME = "http"
# With --tls: the certificate directory.
TLS_DIR = None


def check(name, ok, detail=""):
    return results.check(name, ok, detail)


def start(name, args, logdir=None, env=None):
    return procs.start(name, args, env)


def tls_args(mid):
    """Member `mid`'s certificate on both ports, and the CA its peers' must be signed by."""
    if not TLS_DIR:
        return []
    cert, key, ca = (os.path.join(TLS_DIR, f) for f in (f"member-{mid}.crt", f"member-{mid}.key", "ca.crt"))
    return ["--tls-cert-file", cert, "--tls-key-file", key,
            "--peer-tls-cert-file", cert, "--peer-tls-key-file", key, "--peer-tls-ca-file", ca]


def start_member(binary, mid, workdir, logdir):
    args = member_args(binary, mid, MEMBERS, workdir,
                       extra=[*bus_args(PORTS), "--registration-secret", SECRET, *tls_args(mid)])
    return start(f"gridraft-{mid}", args, logdir, member_env())


def leader():
    live = [MEMBERS[mid][1] for mid in MEMBERS if procs.alive(f"gridraft-{mid}")]
    return find_leader(live, CLUSTER_SECRET)


def new_session():
    return grid_new_session(PORTS)


def webdriver_round(sid):
    """Navigate, read the title, find an element and read its text. Returns None or an error."""
    base = f"http://127.0.0.1:{ROUTER}/session/{sid}"
    code, body = http("POST", f"{base}/url", {"url": PAGE})
    if code != 200:
        return f"navigate: {code} {body}"
    code, body = http("GET", f"{base}/title")
    if code != 200 or body["value"] != "gridraft e2e":
        return f"title: {code} {body}"
    code, body = http("POST", f"{base}/element", {"using": "css selector", "value": "#greeting"})
    if code != 200:
        return f"find element: {code} {body}"
    element = list(body["value"].values())[0]
    code, body = http("GET", f"{base}/element/{element}/text")
    if code != 200 or body["value"] != "hello grid":
        return f"element text: {code} {body}"
    return None


def map_uri(mid, sid):
    return http("GET", f"{SCHEME}://127.0.0.1:{MEMBERS[mid][0]}/se/grid/session/{sid}/uri")


def live_members():
    return [mid for mid in MEMBERS if procs.alive(f"gridraft-{mid}")]


def check_in_map(sids, node_uri, phase):
    for sid in sids:
        for mid in live_members():
            code, body = map_uri(mid, sid)
            check(f"{phase}: session {sid[:8]} is in the map of member {mid} with the node's URI",
                  code == 200 and body["value"] == node_uri, f"got {code} {body}")


def quit_and_check_gone(sids, phase):
    for sid in sids:
        code, body = http("DELETE", f"http://127.0.0.1:{ROUTER}/session/{sid}")
        check(f"{phase}: quit session {sid[:8]}", code == 200, f"got {code} {body}")
    for sid in sids:
        for mid in live_members():
            def gone():
                code, body = http("GET", f"{SCHEME}://127.0.0.1:{MEMBERS[mid][0]}/se/grid/session/{sid}")
                return code == 404 and body
            try:
                body = wait_until(f"{sid} to leave member {mid}", gone, timeout=30)
                msg = body["value"]["message"]
                check(f"{phase}: session {sid[:8]} left member {mid} through session-closed",
                      "reason: session closed normally (QUIT command)" in msg, msg)
            except RuntimeError as e:
                check(f"{phase}: session {sid[:8]} left member {mid}", False, str(e))


def phase_plain(node_uri):
    sids = [new_session() for _ in range(3)]
    for sid in sids:
        err = webdriver_round(sid)
        check(f"plain: WebDriver commands in session {sid[:8]}", err is None, err or "")
    check_in_map(sids, node_uri, "plain")
    quit_and_check_gone(sids, "plain")


def phase_leader_kill(node_uri, binary, workdir, logdir, seconds):
    sids = [new_session() for _ in range(3)]
    check_in_map(sids, node_uri, "kill")
    errors, rounds = [], [0]
    stop = threading.Event()

    def drive(sid):
        while not stop.is_set():
            err = webdriver_round(sid)
            rounds[0] += 1
            if err:
                errors.append(f"{sid[:8]}: {err}")

    threads = [threading.Thread(target=drive, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    time.sleep(seconds / 3)
    victim = leader()
    log(f"killing the gridraft leader, member {victim}, with SIGKILL")
    procs.signal(f"gridraft-{victim}", signal.SIGKILL)
    killed_at = time.time()
    new_leader = wait_until("a new leader", lambda: (leader() not in (None, victim)) and leader(), timeout=30)
    log(f"member {new_leader} leads {time.time() - killed_at:.2f}s after the kill")
    time.sleep(seconds * 2 / 3)
    stop.set()
    for t in threads:
        t.join()
    check(f"kill: all {rounds[0]} WebDriver rounds before, during and after the leader kill succeeded",
          not errors, "; ".join(errors[:5]))
    more = new_session()
    err = webdriver_round(more)
    check("kill: a session started after the kill works", err is None, err or "")
    sids.append(more)
    check_in_map(sids, node_uri, "kill")
    quit_and_check_gone(sids, "kill")
    log(f"restarting member {victim}")
    start_member(binary, victim, workdir, logdir)
    wait_until(f"member {victim} to be ready",
               lambda: http("GET", f"{SCHEME}://127.0.0.1:{MEMBERS[victim][0]}/readyz")[0] == 204, timeout=60)
    for sid in sids:
        code, _ = map_uri(victim, sid)
        check(f"kill: restarted member {victim} does not resurrect {sid[:8]}", code == 404, f"got {code}")


def drive_grid(sids, stop, errors, counts):
    """WebDriver rounds in each of `sids`, and a new session (quit again) now and then, until
    `stop` is set; failures go to `errors`."""
    def rounds(sid):
        while not stop.is_set():
            err = webdriver_round(sid)
            counts["rounds"] += 1
            if err:
                errors.append(f"{sid[:8]}: {err}")

    def sessions():
        while not stop.is_set():
            try:
                sid = new_session()
                err = webdriver_round(sid)
                code, body = http("DELETE", f"http://127.0.0.1:{ROUTER}/session/{sid}")
                counts["sessions"] += 1
                if err or code != 200:
                    errors.append(f"new session {sid[:8]}: {err or (code, body)}")
            except Exception as e:  # noqa: BLE001 - counted as a failed request
                errors.append(f"new session: {e!r}")
            time.sleep(0.5)

    threads = [threading.Thread(target=rounds, args=(sid,)) for sid in sids]
    threads.append(threading.Thread(target=sessions))
    for t in threads:
        t.start()
    return threads


def phase_rotation(node_uri):
    """Renews each member's certificate and key (both ports) in turn under Grid load."""
    sids = [new_session() for _ in range(2)]
    errors, counts = [], {"rounds": 0, "sessions": 0}
    stop = threading.Event()
    threads = drive_grid(sids, stop, errors, counts)
    peer_context = procs_module.PEER_TLS_CONTEXT
    try:
        time.sleep(2)
        for mid in MEMBERS:
            public, peer = MEMBERS[mid]
            old = cert_der(os.path.join(TLS_DIR, f"member-{mid}.crt"))
            # A new key and certificate, moved over the member's files (key first, as a tool that
            # renews in place does; a pair caught half-written is refused and retried).
            crt, key = make_leaf(TLS_DIR, f"renewed-{mid}")
            os.replace(key, os.path.join(TLS_DIR, f"member-{mid}.key"))
            os.replace(crt, os.path.join(TLS_DIR, f"member-{mid}.crt"))
            new = cert_der(os.path.join(TLS_DIR, f"member-{mid}.crt"))
            if mid == 1:
                log("member 1 finds its renewed files on its own (checked every 5 s)")
            else:
                log(f"SIGHUP to member {mid} after renewing its files")
                procs.signal(f"gridraft-{mid}", signal.SIGHUP, wait=False)
            for port, what in ((public, "public"), (peer, "peer")):
                context = procs_module.TLS_CONTEXT if what == "public" else peer_context
                try:
                    wait_until(f"member {mid}'s {what} port to present the renewed certificate",
                               lambda: presented_cert(port, context) == new, timeout=20)
                    check(f"rotation: member {mid}'s {what} port presents the renewed certificate", True)
                except RuntimeError as e:
                    check(f"rotation: member {mid}'s {what} port presents the renewed certificate", False, str(e))
            check(f"rotation: member {mid}'s certificate changed", old != new)
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    log(f"rotation: {counts['rounds']} WebDriver rounds, {counts['sessions']} new sessions")
    check(f"rotation: all {counts['rounds']} WebDriver rounds and {counts['sessions']} new sessions during the "
          "rotation succeeded", not errors and counts["sessions"] > 0, "; ".join(errors[:5]))
    check_in_map(sids, node_uri, "rotation")
    quit_and_check_gone(sids, "rotation")


def check_peer_tls():
    """The peer ports speak only TLS with a client certificate, and members use streams."""
    plain = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                            f"http://127.0.0.1:{MEMBERS[1][1]}/metrics"], capture_output=True, text=True)
    check("tls: a member's peer port answers no plain HTTP", plain.stdout.strip() in ("000", ""),
          f"curl printed {plain.stdout!r}")
    no_cert = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                              "--cacert", os.path.join(TLS_DIR, "ca.crt"),
                              f"https://127.0.0.1:{MEMBERS[1][1]}/metrics"], capture_output=True, text=True)
    check("tls: a member's peer port refuses a client without a certificate", no_cert.stdout.strip() in ("000", ""),
          f"curl printed {no_cert.stdout!r}")
    lead = leader()
    peer = MEMBERS[lead][1]
    req = urllib.request.Request(f"https://127.0.0.1:{peer}/metrics",
                                 headers={"Authorization": f"Bearer {CLUSTER_SECRET}"})
    with urllib.request.urlopen(req, timeout=5, context=procs_module.PEER_TLS_CONTEXT) as r:
        text = r.read().decode()
    streams = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("gridraft_peer_streams_open ")]
    check("tls: the leader's followers reach it on TLS peer streams", streams and streams[0] >= 1, f"{streams}")


def main():
    ap = tier_arguments(__doc__)
    ap.add_argument("--seconds", type=float, default=12, help="length of the leader-kill phase")
    ap.add_argument("--tls", action="store_true", help="HTTPS between the Grid and the session map")
    args = ap.parse_args()
    workdir, logdir = tier_dirs("gridraft-e2e-tls-" if args.tls else "gridraft-e2e-")
    global procs, SCHEME, TLS_DIR
    procs = Procs(logdir)
    java_opts = []
    if args.tls:
        TLS_DIR = os.path.join(workdir, "tls")
        os.makedirs(TLS_DIR)
        ca, cert, key = make_certs(TLS_DIR)
        for mid in MEMBERS:
            make_leaf(TLS_DIR, f"member-{mid}")
        SCHEME = "https"
        procs_module.TLS_CONTEXT = ssl.create_default_context(cafile=ca)
        peer_context = ssl.create_default_context(cafile=ca)
        peer_context.load_cert_chain(cert, key)
        procs_module.PEER_TLS_CONTEXT = peer_context
        store = os.path.join(workdir, "gridraft-ca.jks")
        subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "gridraft", "-file", ca,
                        "-keystore", store, "-storepass", "changeit"], check=True, capture_output=True)
        java_opts = [f"-Djavax.net.ssl.trustStore={store}", "-Djavax.net.ssl.trustStorePassword=changeit"]
    with open(os.path.join(workdir, "cluster-secret"), "w") as f:
        f.write(CLUSTER_SECRET)
    try:
        for mid in MEMBERS:
            start_member(args.gridraft, mid, workdir, logdir)
        cfg = os.path.join(workdir, "haproxy.cfg")
        publics = {mid: p[0] for mid, p in MEMBERS.items()}
        if args.tls:
            write_haproxy_tls_cfg(cfg, VIP, publics, ca)
        else:
            write_haproxy_cfg(cfg, VIP, publics)
        start("haproxy", ["haproxy", "-db", "-f", cfg], logdir)
        vip = f"{SCHEME}://127.0.0.1:{VIP}"
        wait_until("gridraft behind the VIP", lambda: http("GET", f"{vip}/readyz")[0] == 204)
        if args.tls:
            plain = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                                    f"http://127.0.0.1:{MEMBERS[1][0]}/readyz"], capture_output=True, text=True)
            check("tls: a member's public port answers no plain HTTP", plain.stdout.strip() in ("000", ""),
                  f"curl printed {plain.stdout!r}")
        node_uri = start_grid(procs, args.jar, workdir, PORTS, vip, SECRET, java_opts=java_opts)
        log(f"grid ready; node {node_uri}")
        phase_plain(node_uri)
        phase_leader_kill(node_uri, args.gridraft, workdir, logdir, args.seconds)
        if args.tls:
            check_peer_tls()
            phase_rotation(node_uri)
        check_logs_have_no_panic(procs, results, [f"gridraft-{mid}" for mid in MEMBERS])
    except Exception as e:  # noqa: BLE001 - report and count
        traceback.print_exc()
        check("the run completed", False, repr(e))
    finally:
        finish(procs, results, logdir, args.keep_logs)


if __name__ == "__main__":
    main()
