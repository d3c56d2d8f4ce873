#!/usr/bin/env python3
"""The gridraft failover suite: a three-member compose cluster (docker/compose.yaml) behind the
haproxy VIP, a recorded Grid-shaped workload through the VIP, and one fault per round.

After every round:
  * the history (with a final read of every key) is linearizable against a per-key register
    (linearizability.py: Wing-Gong/Lowe search, P-compositional per key);
  * every acknowledged add is present unless a remove was issued after it, and nothing
    acknowledged as removed came back;
  * every member converged (same leader, applied index and session count, and the count matches
    what the round left);
  * no member's log contains a panic;
  * single-member kills and restarts caused no failed request (the issue's target), and while
    quorum was lost nothing was acknowledged.
It reports per fault the unavailability window and the time from leader loss to the first
acknowledged write, and ends with `N passed, M failed` (exit 1 on any failure).

With --tls the same rounds run with TLS on (docker/compose.tls.yaml over compose.yaml):
certificates from docker/make-certs.sh in the results directory, the workload on
https://127.0.0.1:VIP trusting that CA, members' /admin/status read over mutual TLS.

Run through cluster-tests/run.sh, which builds the images first. See docs/testing.md.
"""

import argparse
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import time
import traceback

import faults
from cluster import MEMBERS, Cluster, PeerTls, now
from linearizability import check_history, explain
from workload import History, Vip, Workload, to_ops

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T0 = now()
T0_WALL = time.time()


def log(msg):
    print(f"[{now() - T0:7.1f}s] {msg}", flush=True)


class Suite:
    def __init__(self, args):
        self.args = args
        self.passed = 0
        self.failed = 0
        self.rows = []
        self.results_dir = args.results
        os.makedirs(self.results_dir, exist_ok=True)
        secret_file = os.path.join(self.results_dir, "cluster-secret")
        self.secret = f"failover-{random.getrandbits(64):016x}"
        with open(secret_file, "w") as f:
            f.write(self.secret)
        os.chmod(secret_file, 0o644)  # read by the container's non-root user
        env = {
            "GRIDRAFT_IMAGE": args.gridraft_image,
            "HAPROXY_IMAGE": args.haproxy_image,
            "CLUSTER_SECRET_FILE": secret_file,
            "GRIDRAFT_VIP_ADDR": "127.0.0.1",
            "GRIDRAFT_VIP_PORT": str(args.vip_port),
            "GRIDRAFT_RESTART": "no",
            "GRIDRAFT_LOG_FORMAT": "json",
        }
        compose_files = [os.path.join(REPO, "docker", "compose.yaml")]
        peer_tls, vip_context = None, None
        if args.tls:
            tls_dir = os.path.join(self.results_dir, "tls")
            subprocess.run([os.path.join(REPO, "docker", "make-certs.sh"), tls_dir], check=True)
            env["GRIDRAFT_TLS_DIR"] = tls_dir
            compose_files.append(os.path.join(REPO, "docker", "compose.tls.yaml"))
            ca = os.path.join(tls_dir, "ca.crt")
            # Any member's pair is a client certificate of the peer CA (clientAuth).
            peer_tls = PeerTls(ca, os.path.join(tls_dir, "gridraft-1.crt"), os.path.join(tls_dir, "gridraft-1.key"))
            # The VIP's certificate names 127.0.0.1: full verification, hostname included.
            vip_context = ssl.create_default_context(cafile=ca)
        self.cluster = Cluster(args.project, compose_files, self.secret, env, log, peer_tls=peer_tls)
        self.vip = Vip("127.0.0.1", args.vip_port, args.request_timeout, context=vip_context)

    def check(self, round_name, name, ok, detail=""):
        if ok:
            self.passed += 1
            log(f"  PASS {round_name}: {name}")
        else:
            self.failed += 1
            log(f"  FAIL {round_name}: {name}" + (f"\n{detail}" if detail else ""))
        return ok

    # ---- one round -------------------------------------------------------------------------
    def run_round(self, index, name, fault, seed):
        c = self.cluster
        rng = random.Random(seed)
        tag = f"r{index:02d}-{name}"
        log(f"round {index}: {name} (seed {seed})")
        lead = c.wait_stable()
        live_before = c.status(lead)["live_sessions"]
        history = History()
        wl = Workload(self.vip, history, tag, clients=self.args.clients, readers=self.args.readers, seed=seed)
        wl.start()
        time.sleep(self.args.warmup)
        info, error = None, None
        try:
            info = fault(c, rng)
        except Exception as e:  # noqa: BLE001 - reported as a failed check, then repaired
            error = e
            log(f"  fault raised: {traceback.format_exc()}")
        time.sleep(self.args.settle)
        stuck = wl.stop(timeout=self.args.request_timeout + 10)
        try:
            c.heal_all()
            c.wait_stable()
        except Exception as e:  # noqa: BLE001
            error = error or e
            log(f"  repair failed: {e}; recreating the cluster after this round")
        finals = wl.final_reads() if error is None else {}
        records = history.snapshot()
        self.save_history(tag, records)
        self.check(name, "fault injected and repaired", error is None, repr(error) if error else "")
        self.check(name, "every client stopped", not stuck, f"{len(stuck)} client threads still blocked")
        if info is not None and error is None:
            self.verify(name, tag, info, records, finals, live_before)
        self.scan_logs(name)
        if error is not None:
            self.cluster.up()

    def verify(self, name, tag, info, records, finals, live_before):
        work = [r for r in records if r["client"] != "final"]
        counts = {o: sum(1 for r in work if r["outcome"] == o) for o in ("ok", "failed", "unknown", "corrupt")}
        writes = [r for r in work if r["kind"] in ("add", "remove")]
        t_fault, t_heal = info["t_fault"], info["t_heal"]
        unavail, unavail_w = self.unavailability(work, t_fault, t_heal)
        first_write = min((r["complete"] for r in writes if r["outcome"] == "ok" and r["invoke"] >= t_fault),
                          default=None)
        to_first = None if first_write is None else first_write - t_fault
        row = dict(round=tag, fault=name, ops=len(work), **counts,
                   unavailable=unavail, write_unavailable=unavail_w, first_ack_write=to_first,
                   elected_after=info.get("elected_after"), leader_lost=info["leader_lost"],
                   steps=info["steps"])
        log("  " + "; ".join(info["steps"]))
        log(f"  {len(work)} ops: {counts}; unavailable {fmt(unavail)} (writes {fmt(unavail_w)}); "
            f"{'leader loss' if info['leader_lost'] else 'fault'} -> first ack write {fmt(to_first)}; "
            f"new leader seen after {fmt(info.get('elected_after'))}")

        self.check(name, "no torn or undecodable answer", counts["corrupt"] == 0,
                   "\n".join(json.dumps(r) for r in work if r["outcome"] == "corrupt")[:4000])
        ok, bad = check_history(to_ops(records), max_states=self.args.max_states)
        detail = "\n\n".join(explain(r, origin=T0) for r in bad[:3])
        row["linearizable"] = ok
        self.check(name, f"history of {len({r['key'] for r in records})} keys is linearizable", ok, detail)
        lost = self.lost_or_resurrected(records, finals)
        row["lost"] = len(lost)
        self.check(name, "every acknowledged add present unless removed; no removed session back",
                   not lost, "\n".join(lost[:20]))
        if info.get("strict"):
            bad_ops = [r for r in work if r["outcome"] in ("failed", "unknown")]
            self.check(name, "no failed client request (single-member fault through the VIP)", not bad_ops,
                       "\n".join(f"{r['kind']} {r['key']} at {r['invoke'] - T0:.3f}s: {r['outcome']} "
                                 f"{r['status']} {r['detail']}" for r in bad_ops[:10]))
        if "no_quorum" in info:
            start, end = info["no_quorum"]
            acked = [r for r in work if r["outcome"] == "ok" and r["invoke"] >= start + 0.05 and r["complete"] <= end]
            self.check(name, "nothing acknowledged while no member had a quorum", not acked,
                       "\n".join(json.dumps(r) for r in acked[:10]))
        self.check_convergence(name, finals, live_before)
        self.rows.append(row)

    @staticmethod
    def unavailability(work, t_fault, t_heal):
        """Longest stretch after the fault in which no operation (and no write) completed ok."""
        def longest(ops):
            times = sorted(r["complete"] for r in ops if r["outcome"] == "ok")
            gap, prev = 0.0, t_fault
            for t in times:
                if t > t_fault:
                    gap = max(gap, t - prev)
                    prev = t
            return gap
        return longest(work), longest([r for r in work if r["kind"] in ("add", "remove")])

    @staticmethod
    def lost_or_resurrected(records, finals):
        """The explicit durability check (the linearizability check implies it; this one names
        the session). Present expected: an acknowledged add with no remove issued after its
        invocation. Absent expected: an acknowledged remove with no add issued after its
        invocation."""
        problems = []
        by_key = {}
        for r in records:
            if r["client"] != "final":
                by_key.setdefault(r["key"], []).append(r)
        for key, ops in by_key.items():
            final = finals.get(key)
            if final is None:
                problems.append(f"{key}: no final read answered")
                continue
            got = final["output"]
            for w in ops:
                if w["kind"] not in ("add", "remove") or w["outcome"] != "ok":
                    continue
                # Writes that may take effect after w: not acknowledged (they may land any time
                # later), or still running when w was issued.
                later = [o for o in ops if o["kind"] in ("add", "remove") and o is not w
                         and (o["outcome"] != "ok" or o["complete"] > w["invoke"])]
                if w["kind"] == "add" and not any(o["kind"] == "remove" for o in later):
                    values = {w["value"]} | {o["value"] for o in later if o["kind"] == "add"}
                    if got not in values:
                        problems.append(f"{key}: acknowledged add of {w['value']} (done at {w['complete'] - T0:.3f}s) "
                                        f"but the final read at {final['invoke'] - T0:.3f}s found {got!r}")
                if w["kind"] == "remove" and not any(o["kind"] == "add" for o in later) and got is not None:
                    problems.append(f"{key}: acknowledged remove (done at {w['complete'] - T0:.3f}s) "
                                    f"but the final read found {got!r}")
        return problems

    def check_convergence(self, name, finals, live_before):
        st = self.cluster.statuses()
        live = {m: s and s.get("live_sessions") for m, s in st.items()}
        applied = {m: s and s.get("last_applied") for m, s in st.items()}
        present = sum(1 for r in finals.values() if r["output"] is not None)
        same = len(set(live.values())) == 1 and len(set(applied.values())) == 1 and None not in live.values()
        self.check(name, "members converged: same applied index and session count, matching the round",
                   same and live[1] - live_before == present,
                   f"live sessions {live}, applied {applied}, before {live_before}, present after round {present}")

    def scan_logs(self, name):
        panics = []
        for m in MEMBERS:
            for line in self.cluster.logs(m).splitlines():
                if "panicked" in line or "RUST_BACKTRACE" in line:
                    panics.append(f"member {m}: {line[:300]}")
        self.check(name, "no panic in any member's log", not panics, "\n".join(panics[:10]))

    def save_history(self, tag, records):
        path = os.path.join(self.results_dir, f"history-{tag}.jsonl")
        with open(path, "w") as f:
            for r in records:
                r = dict(r, invoke=round(r["invoke"] - T0, 6), complete=round(r["complete"] - T0, 6))
                f.write(json.dumps(r) + "\n")

    def save_logs(self):
        for m in MEMBERS:
            with open(os.path.join(self.results_dir, f"gridraft-{m}.log"), "w") as f:
                f.write(self.cluster.logs(m))
        with open(os.path.join(self.results_dir, "haproxy.log"), "w") as f:
            f.write(self.cluster.haproxy_logs())

    # ---- the whole run ---------------------------------------------------------------------
    def plan(self):
        rng = random.Random(self.args.seed)
        if self.args.only:
            wanted = self.args.only.split(",")
            rounds = [(n, f) for n, f in faults.SINGLE if n in wanted]
            rounds += [("mixed", faults.mixed)] * wanted.count("mixed")
        elif self.args.soak:
            rounds = [("mixed", faults.mixed)] * self.args.soak
        else:
            rounds = list(faults.SINGLE) + [("mixed", faults.mixed)] * self.args.mixed
        return [(i + 1, n, f, rng.randrange(1 << 30)) for i, (n, f) in enumerate(rounds)]

    def run(self):
        plan = self.plan()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0_WALL))
        log(f"results in {self.results_dir}; {len(plan)} rounds; seed {self.args.seed}; t=0 is {started}")
        scheme = "https" if self.args.tls else "http"
        log(f"starting the cluster (project {self.args.project}, VIP {scheme}://127.0.0.1:{self.args.vip_port})")
        self.cluster.up()
        try:
            lead = self.cluster.wait_stable(timeout=120)
            log(f"cluster up; leader {lead}")
            for index, name, fault, seed in plan:
                try:
                    self.run_round(index, name, fault, seed)
                except Exception as e:  # noqa: BLE001 - a broken round must not stop the suite
                    self.check(name, "round completed", False, traceback.format_exc())
                    self.cluster.heal_all()
                    self.cluster.up()
        finally:
            if self.failed or self.args.keep_logs:
                self.save_logs()
            if not self.args.keep_cluster:
                self.cluster.down()
        self.report()

    def report(self):
        lines = ["", "round                      ops    ok  fail  unkn  unavail  w-unavail  ->1st-ack  elected  lin  lost"]
        for r in self.rows:
            lines.append(f"{r['round']:<25} {r['ops']:>5} {r['ok']:>5} {r['failed']:>5} {r['unknown']:>5}"
                         f"  {fmt(r['unavailable']):>7}  {fmt(r['write_unavailable']):>9}  {fmt(r['first_ack_write']):>9}"
                         f"  {fmt(r['elected_after']):>7}  {'ok' if r['linearizable'] else 'NO':>3}  {r['lost']:>4}")
        kills = [r["first_ack_write"] for r in self.rows
                 if r["fault"] in ("kill-leader",) and r["first_ack_write"] is not None]
        lost_leader = [r["first_ack_write"] for r in self.rows if r["leader_lost"] and r["first_ack_write"] is not None
                       and r["fault"] not in ("full-restart", "rolling-restart", "no-quorum")]
        if lost_leader:
            lines.append(f"leader loss -> first acknowledged write (kill/pause/partition/mixed): "
                         f"median {statistics.median(lost_leader):.2f}s, max {max(lost_leader):.2f}s over {len(lost_leader)} rounds")
        if kills:
            lines.append(f"leader kill -> first acknowledged write: median {statistics.median(kills):.2f}s")
        lines.append(f"total time {now() - T0:.0f}s; histories and logs in {self.results_dir}")
        text = "\n".join(lines)
        print(text, flush=True)
        with open(os.path.join(self.results_dir, "summary.txt"), "w") as f:
            f.write(text + "\n")
            f.write(json.dumps(self.rows, indent=1, default=str) + "\n")


def fmt(x):
    return "-" if x is None else f"{x:.2f}s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soak", type=int, default=0, help="run N mixed rounds instead of the quick plan")
    ap.add_argument("--mixed", type=int, default=1, help="mixed rounds after the single faults (quick plan)")
    ap.add_argument("--only", help="comma-separated round names, e.g. kill-leader,pause-leader,mixed")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the fault")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of load after the repair")
    ap.add_argument("--request-timeout", type=float, default=20.0)
    ap.add_argument("--max-states", type=int, default=2_000_000)
    ap.add_argument("--project", default="gridraft-failover")
    ap.add_argument("--vip-port", type=int, default=25556)
    ap.add_argument("--gridraft-image", default=os.environ.get("GRIDRAFT_IMAGE", "gridraft:local"))
    ap.add_argument("--haproxy-image", default=os.environ.get("HAPROXY_IMAGE", "gridraft-haproxy:local"))
    ap.add_argument("--results", default=os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S")))
    ap.add_argument("--keep-cluster", action="store_true", help="leave the cluster running at the end")
    ap.add_argument("--keep-logs", action="store_true", help="save container logs even when green")
    ap.add_argument("--tls", action="store_true",
                    help="TLS on: docker/compose.tls.yaml, certificates from docker/make-certs.sh in the results directory")
    args = ap.parse_args()
    try:
        suite = Suite(args)
    except Exception:  # noqa: BLE001 - setup failure (certificates, the results directory)
        traceback.print_exc()
        print("0 passed, 1 failed", flush=True)
        sys.exit(1)
    try:
        suite.run()
    except Exception:  # noqa: BLE001 - setup failure
        suite.check("suite", "the cluster started", False, traceback.format_exc())
    print(f"{suite.passed} passed, {suite.failed} failed", flush=True)
    sys.exit(1 if suite.failed else 0)


if __name__ == "__main__":
    main()
