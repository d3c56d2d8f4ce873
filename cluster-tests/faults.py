"""The faults, one function each. A fault runs while the workload does; it returns what the
checks and the report need:

  t_fault       when the fault was in place (after the docker command returned)
  t_heal        when the last repair command returned
  leader_lost   whether the fault took the leader away
  elected_after seconds from t_fault until another member was seen leading (None if n/a)
  strict        the issue's target applies: no client request may fail (single-member kills
                and restarts, through the VIP)
  no_quorum     (start, end): no operation invoked inside may be acknowledged
  steps         what was done, for the report
"""

import random
import threading
import time

from cluster import MEMBERS, now


def sleep_until(t):
    delay = t - now()
    if delay > 0:
        time.sleep(delay)


def pick_follower(c, leader, rng):
    return rng.choice([m for m in MEMBERS if m != leader])


def _elected(c, old, t_fault, among=None, timeout=30):
    among = among or [m for m in MEMBERS if m != old]
    c.wait_leader(among=among, exclude=(old,), timeout=timeout)
    return now() - t_fault


def kill_leader(c, rng, hold=5.0):
    lead = c.wait_leader()
    c.kill(lead)
    t = now()
    elected = _elected(c, lead, t)
    sleep_until(t + hold)
    c.start(lead)
    return dict(t_fault=t, t_heal=now(), leader_lost=True, elected_after=elected, strict=True,
                steps=[f"kill -9 leader {lead}", f"new leader after {elected:.2f}s", f"start {lead} after {hold:.0f}s"])


def kill_follower(c, rng, hold=5.0):
    lead = c.wait_leader()
    f = pick_follower(c, lead, rng)
    c.kill(f)
    t = now()
    sleep_until(t + hold)
    c.start(f)
    return dict(t_fault=t, t_heal=now(), leader_lost=False, elected_after=None, strict=True,
                steps=[f"kill -9 follower {f} (leader {lead})", f"start {f} after {hold:.0f}s"])


def pause_leader(c, rng, hold=4.0):
    """docker pause freezes the leader past the election timeout; on unpause it still believes
    it leads until it hears the new term. It must not serve a read in between."""
    lead = c.wait_leader()
    c.pause(lead)
    t = now()
    elected = _elected(c, lead, t)
    sleep_until(t + hold)
    c.unpause(lead)
    return dict(t_fault=t, t_heal=now(), leader_lost=True, elected_after=elected, strict=False,
                steps=[f"pause leader {lead}", f"new leader after {elected:.2f}s", f"unpause {lead} after {hold:.0f}s"])


def partition_leader(c, rng, hold=6.0):
    """The leader loses the raft network (a minority of one) but stays reachable through the
    VIP: requests routed to it must wait or fail, never answer from its stale state."""
    lead = c.wait_leader()
    c.disconnect(lead)
    t = now()
    elected = _elected(c, lead, t)
    sleep_until(t + hold)
    c.connect(lead)
    return dict(t_fault=t, t_heal=now(), leader_lost=True, elected_after=elected, strict=False,
                steps=[f"cut leader {lead} off the raft network", f"new leader after {elected:.2f}s",
                       f"reconnect after {hold:.0f}s"])


def no_quorum(c, rng, hold=14.0):
    """Two members cut off: no member has a quorum. Nothing invoked while it lasts may be
    acknowledged (writes fail or time out; reads are not served). It lasts longer than
    grid.write-timeout (10s) and grid.ready-grace (5s), so requests do time out and the VIP
    runs out of ready members."""
    lead = c.wait_leader()
    other = pick_follower(c, lead, rng)
    c.disconnect(lead)
    c.disconnect(other)
    t = now()
    sleep_until(t + hold)
    t_end = now()
    c.connect(lead)
    c.connect(other)
    return dict(t_fault=t, t_heal=now(), leader_lost=True, elected_after=None, strict=False,
                no_quorum=(t, t_end),
                steps=[f"cut leader {lead} and member {other} off the raft network", f"reconnect after {hold:.0f}s"])


def full_restart(c, rng, grace=20):
    """Every member restarted at once (SIGTERM, then start)."""
    t = now()
    threads = [threading.Thread(target=c.restart, args=(m, grace)) for m in MEMBERS]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t_heal = now()
    c.wait_stable()
    return dict(t_fault=t, t_heal=t_heal, leader_lost=True, elected_after=now() - t, strict=False,
                steps=["docker restart of all three members at once", f"all restarted after {t_heal - t:.1f}s"])


def rolling_restart(c, rng, grace=20):
    """One member at a time, followers first, each back and caught up before the next."""
    lead = c.wait_stable()
    order = [m for m in MEMBERS if m != lead] + [lead]
    t = now()
    steps = []
    for m in order:
        t0 = now()
        c.restart(m, grace)
        c.wait_stable()
        steps.append(f"restart {m}{' (leader)' if m == lead else ''}: back in {now() - t0:.1f}s")
    return dict(t_fault=t, t_heal=now(), leader_lost=True, elected_after=None, strict=True, steps=steps)


# ---- mixed rounds ------------------------------------------------------------------------------

def _one_member_fault(c, rng, kind, target, hold):
    """Injects, holds, repairs; returns when the fault was in place."""
    if kind == "restart":
        t = now()
        c.restart(target, grace=int(hold) + 1)
        return t
    inject, repair = {
        "kill": (c.kill, c.start),
        "pause": (c.pause, c.unpause),
        "partition": (c.disconnect, c.connect),
    }[kind]
    inject(target)
    t = now()
    time.sleep(hold)
    repair(target)
    return t


def mixed(c, rng, faults=3):
    """Several single-member faults back to back, each healed before the next but without
    waiting for the cluster to settle, on the leader or a follower at random."""
    steps, t_first, leader_lost = [], None, False
    for _ in range(faults):
        kind = rng.choice(["kill", "pause", "partition", "restart"])
        lead = c.leader()
        on_leader = lead is not None and rng.random() < 0.6
        target = lead if on_leader else rng.choice([m for m in MEMBERS if m != lead])
        hold = round(rng.uniform(1.5, 4.0), 1)
        t0 = _one_member_fault(c, rng, kind, target, hold)
        t_first = t_first or t0
        leader_lost = leader_lost or on_leader
        steps.append(f"{kind} {'leader' if on_leader else 'member'} {target} for {hold}s")
        time.sleep(rng.uniform(0.5, 2.0))
    return dict(t_fault=t_first, t_heal=now(), leader_lost=leader_lost, elected_after=None, strict=False,
                steps=steps)


SINGLE = [
    ("kill-leader", kill_leader),
    ("kill-follower", kill_follower),
    ("pause-leader", pause_leader),
    ("partition-leader", partition_leader),
    ("no-quorum", no_quorum),
    ("full-restart", full_restart),
    ("rolling-restart", rolling_restart),
]
