#!/usr/bin/env python3
"""Where a cluster's CPU goes, by phase of the request path, from `perf script` output.

    perf script -F pid,tid,comm,ip,sym -i perf.data | \
        scripts/profile_phases.py --leader PID [--us-per-request US]

`perf.data` must hold call graphs (`perf record --call-graph dwarf`). Each sample is counted in
the phase of the innermost frame of its stack that names one (the first pattern of PHASES to
match that frame); a sample no frame of which names a phase is counted as "runtime and other"
(tokio's scheduler, the kernel's idle and interrupt paths, unresolved frames). The table gives
each phase's share of all samples, for the leader and for the other processes together; with
`--us-per-request` (the server CPU per request that gridraft-bench printed for the same seconds)
also microseconds per request, all members together. `scripts/bench.sh profile` runs it.
"""

import argparse
import collections
import re
import sys

# Innermost match wins, so a phase nested in another (parsing inside the public handler, the
# log's append inside the Raft core) is named before the one around it.
PHASES = [
    ("parse an add's body", r"session::parse_add_body"),
    ("render the GET body on apply", r"map::Record::new"),
    ("map insert and indexes", r"SessionMap::(insert_record|index|unindex|remove)|imbl::"),
    ("snapshots", r"snapshot|Snapshot|map::image"),
    ("log append", r"SegmentLog::append"),
    ("log fsync", r"sync_data|LogSync::sync"),
    # Entries and peer messages are bincode; serde_json's frames are the check of an add's body,
    # left to the parse around them.
    ("entry decode", r"^(?!.*serde_json).*(Deserialize|deserializ)"),
    ("entry encode", r"^(?!.*serde_json).*(Serialize|serializ)"),
    ("readiness watcher", r"cluster::ready::|health::watch_raft"),
    ("ReadIndex", r"cluster::read|read_batch|read_proof|read_index"),
    ("peer streams", r"gridraft::peer::|api::peer"),
    ("write queue and forwarding", r"cluster::forward|cluster::write|write_batch"),
    ("Raft core", r"openraft::"),
    ("public HTTP", r"hyper::|api::conn|api::server|api::grid"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in PHASES]
OTHER = "runtime and other"


def phase_of(frames):
    for frame in frames:
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return OTHER


def samples(lines):
    """(pid, frames innermost first) for each sample of `perf script` output."""
    pid, frames = None, []
    for line in lines:
        if not line.strip():
            if pid is not None:
                yield pid, frames
            pid, frames = None, []
        elif line[0] in " \t":
            parts = line.split(None, 1)
            frames.append(parts[1].strip() if len(parts) > 1 else "")
        else:
            # "comm pid/tid" (the fields asked for, in perf's order); the command's name may
            # hold spaces, so the pid is read from the end.
            match = re.search(r"(\d+)/\d+\s*$", line)
            pid = match.group(1) if match else "?"
    if pid is not None:
        yield pid, frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leader", required=True, help="the leader's process id")
    ap.add_argument("--us-per-request", type=float, help="server CPU per request, all members")
    args = ap.parse_args()

    counts = {"leader": collections.Counter(), "followers": collections.Counter()}
    for pid, frames in samples(sys.stdin):
        role = "leader" if pid == args.leader else "followers"
        counts[role][phase_of(frames)] += 1
    total = sum(sum(c.values()) for c in counts.values())
    if not total:
        sys.exit("profile_phases: no samples on standard input")

    names = [name for name, _ in PHASES] + [OTHER]
    header = f"{'phase':32} {'leader':>8} {'followers':>10} {'all':>7}"
    if args.us_per_request:
        header += f" {'us/request':>11}"
    print(header)
    for name in sorted(names, key=lambda n: -(counts["leader"][n] + counts["followers"][n])):
        lead, fol = counts["leader"][name], counts["followers"][name]
        line = f"{name:32} {100 * lead / total:7.1f}% {100 * fol / total:9.1f}% {100 * (lead + fol) / total:6.1f}%"
        if args.us_per_request:
            line += f" {args.us_per_request * (lead + fol) / total:11.1f}"
        print(line)
    lead, fol = sum(counts["leader"].values()), sum(counts["followers"].values())
    print(f"{'samples':32} {lead:8} {fol:10} {total:7}")


if __name__ == "__main__":
    main()
