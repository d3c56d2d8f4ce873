"""A real distributed Selenium Grid from the 4.48 jar on 127.0.0.1, for the real-Grid tiers
(grid_e2e.py, grid_reconcile.py): event-bus, sessionqueue, distributor, router and one node
driving Debian's headless chromium, all with one registration secret, the router and the
distributor pointed at a gridraft session map; new sessions through the router; and the closing
of a tier (stop everything, keep the logs when something failed, `N passed, M failed`).

Standard library only.
"""

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile

from procs import http, log, wait_until

Ports = collections.namedtuple("Ports", "bus_pub bus_sub bus_http queue distributor router node")


def tier_arguments(description):
    """The flags every real-Grid tier takes: --gridraft, --jar, --keep-logs (add your own)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--gridraft", default=os.path.join(repo, "target", "release", "gridraft"))
    ap.add_argument("--jar", default=os.environ.get("GRIDRAFT_SELENIUM_JAR", os.path.join(
        repo, "..", "shared", "selenium", "selenium-server-4.48.0.jar")))
    ap.add_argument("--keep-logs", action="store_true")
    return ap


def tier_dirs(prefix):
    """A fresh work directory and its `logs` folder."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir)
    log(f"work dir {workdir}")
    return workdir, logdir


def java(jar, *args, opts=()):
    return ["java", *opts, "-jar", jar, *args]


def bus_args(ports):
    return ["--publish-events", f"tcp://127.0.0.1:{ports.bus_pub}",
            "--subscribe-events", f"tcp://127.0.0.1:{ports.bus_sub}"]


def start_bus(procs, jar, ports, secret):
    procs.start("event-bus", java(jar, "event-bus", *bus_args(ports), "--port", str(ports.bus_http),
                                  "--host", "127.0.0.1", "--registration-secret", secret))
    wait_until("event bus", lambda: http("GET", f"http://127.0.0.1:{ports.bus_http}/readyz")[0] in (200, 204))


def start_grid(procs, jar, workdir, ports, sessions_url, secret, max_sessions=4, java_opts=()):
    """Starts the Grid with its session map at `sessions_url`; returns the node's URI once the
    router is ready with it. `java_opts` go to the JVMs of the distributor and the router, the
    components that talk to the session map (a trust store for an https map)."""
    sec = ["--registration-secret", secret]
    start_bus(procs, jar, ports, secret)
    procs.start("sessionqueue", java(jar, "sessionqueue", "--port", str(ports.queue), "--host", "127.0.0.1", *sec))
    wait_until("session queue", lambda: http("GET", f"http://127.0.0.1:{ports.queue}/readyz")[0] in (200, 204))
    procs.start("distributor", java(jar, "distributor", "--sessions", sessions_url,
                                    "--sessionqueue", f"http://127.0.0.1:{ports.queue}", "--bind-bus", "false",
                                    "--port", str(ports.distributor), "--host", "127.0.0.1",
                                    *bus_args(ports), *sec, opts=java_opts))
    procs.start("router", java(jar, "router", "--sessions", sessions_url,
                               "--distributor", f"http://127.0.0.1:{ports.distributor}",
                               "--sessionqueue", f"http://127.0.0.1:{ports.queue}",
                               "--port", str(ports.router), "--host", "127.0.0.1", *sec, opts=java_opts))
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    stereotype = json.dumps({"browserName": "chrome", "platformName": "linux",
                             "goog:chromeOptions": {"binary": chromium,
                                                    "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                                             "--disable-gpu"]}})
    node_toml = os.path.join(workdir, "node.toml")
    with open(node_toml, "w") as f:
        f.write(f"[node]\ndetect-drivers = false\nselenium-manager = false\nmax-sessions = {max_sessions}\n"
                "override-max-sessions = true\n\n[[node.driver-configuration]]\n"
                f"display-name = \"chromium\"\nwebdriver-executable = \"{chromedriver}\"\n"
                f"max-sessions = {max_sessions}\nstereotype = '{stereotype}'\n")
    procs.start("node", java(jar, "node", "--config", node_toml, "--port", str(ports.node), "--host", "127.0.0.1",
                             *bus_args(ports), *sec))

    def grid_ready():
        code, body = http("GET", f"http://127.0.0.1:{ports.router}/status")
        return code == 200 and body["value"]["ready"] and body
    status = wait_until("the grid to be ready with a node", grid_ready, timeout=180)
    return status["value"]["nodes"][0]["uri"]


def new_session(ports):
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome"}}}
    code, body = http("POST", f"http://127.0.0.1:{ports.router}/session", caps, timeout=120)
    if code != 200:
        raise RuntimeError(f"new session failed: {code} {body}")
    return body["value"]["sessionId"]


def check_logs_have_no_panic(procs, results, names):
    for name in names:
        with open(procs.log_path(name), errors="replace") as f:
            text = f.read()
        results.check(f"no panic in the log of {name}", "panicked" not in text)


def finish(procs, results, logdir, keep_logs):
    """Stops every process, keeps the logs (printing their tails) when something failed, prints
    `N passed, M failed` and exits non-zero on a failure."""
    procs.stop_all()
    if results.failed:
        log(f"logs kept in {logdir}")
        procs.print_tails()
    elif not keep_logs:
        shutil.rmtree(os.path.dirname(logdir), ignore_errors=True)
    print(results.summary(), flush=True)
    sys.exit(1 if results.failed else 0)
