#!/usr/bin/env python3
"""Turns scripts/bench.sh results into a section of docs/benchmarks.md.

usage: bench_report.py compare|targets|scale|summary RESULTS_DIR BENCHMARKS_MD COMMAND

The section sits between `<!-- BEGIN <kind> -->` and `<!-- END <kind> -->` markers; the rest of
the file (the notes written by hand) is kept.
"""
import functools
import glob
import json
import os
import statistics
import sys

CEILING = "ceiling-3-spread"
SYSTEMS = [
    ("java-local", "Java LocalSessionMap (1 process, in memory)"),
    ("java-redis", "Java RedisBackedSessionMap (Redis, no fsync)"),
    ("etcd-3", "etcd ×3 (linearizable range, put; fsync)"),
    ("gridraft-1", "gridraft ×1 (fsync)"),
    ("gridraft-3-spread", "gridraft ×3, requests spread over all members"),
    # Full GET only: gridraft-bench's constant-answer server (scripts/bench.sh bench_ceiling).
    (CEILING, "ceiling ×3 spread (constant answer)"),
    ("gridraft-3-follower", "gridraft ×3, through a follower"),
    ("gridraft-3-leader", "gridraft ×3, through the leader"),
    ("gridraft-3-readleader-spread", "gridraft ×3 `--read-mode leader`, spread"),
    ("gridraft-3-readleader-follower", "gridraft ×3 `--read-mode leader`, through a follower"),
]
WORKLOADS = ["get", "uri", "add", "mix"]
# p99 (ms) of gridraft ×3 spread in run E (docs/benchmarks.md), the bar issue 16 sets.
RUN_E_P99 = {"get": 2.96, "add": 13.57}


def load(results, system, workload):
    runs = []
    for path in sorted(glob.glob(os.path.join(results, f"{system}.{workload}.*.json"))):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def median_run(runs):
    """The run with the median throughput (its latencies are reported with it)."""
    if not runs:
        return None
    runs = sorted(runs, key=lambda r: r["total"]["rps"])
    return runs[len(runs) // 2]


def cpu_per_request(results, system, workload):
    """Median over the runs of the servers' CPU per request (µs), or None when not measured."""
    values = [r["server_cpu"]["us_per_request"] for r in load(results, system, workload)
              if r.get("server_cpu")]
    return statistics.median(values) if values else None


def target_row(name, value, shown, ok):
    verdict = "–" if value is None else ("met" if ok(value) else "missed")
    return f"| {name} | {shown} | {verdict} |"


def ratio(a, b):
    return a / b if a and b else None


def issue16_values(rate, cpu, tail):
    """What issue 16's targets judge, from three look-ups by (system, workload): the request
    rate, the server CPU per request (µs) and the p99 (ms); each may give None."""
    gr = "gridraft-3-spread"
    share = ratio(rate(gr, "get"), rate(CEILING, "get"))
    return {
        "share": share * 100 if share else None,
        "uri": ratio(rate(gr, "get"), rate("java-local", "uri")),
        "java_add": ratio(rate(gr, "add"), rate("java-local", "add")),
        "etcd_add": ratio(rate(gr, "add"), rate("etcd-3", "add")),
        "cpu_get": cpu(gr, "get"),
        "cpu_add": cpu(gr, "add"),
        "p99_get": tail(gr, "get"),
        "p99_add": tail(gr, "add"),
    }


def issue16_rows(v):
    """Issue 16's targets as table rows, from a dict of the measured values (None: not measured):
    share (% of the ceiling), uri (full GET / Java /uri), java_add, etcd_add (ratios), cpu_get,
    cpu_add (µs), p99_get, p99_add (ms)."""
    def shown(x, fmt):
        return "–" if x is None else fmt.format(x)
    return [
        target_row("×3 spread full GET ≥ 60 % of the ceiling", v["share"],
                   shown(v["share"], "{:.0f} %"), lambda x: x >= 60),
        target_row("×3 spread full GET ≥ 1.5× Java `/uri`", v["uri"],
                   shown(v["uri"], "{:.2f}×"), lambda x: x >= 1.5),
        target_row("×3 spread add ≥ 3× Java add", v["java_add"],
                   shown(v["java_add"], "{:.2f}×"), lambda x: x >= 3),
        target_row("×3 spread add ≥ 3× etcd ×3 put", v["etcd_add"],
                   shown(v["etcd_add"], "{:.2f}×"), lambda x: x >= 3),
        target_row("server CPU per ×3 spread full GET ≤ 20 µs", v["cpu_get"],
                   shown(v["cpu_get"], "{:.1f} µs"), lambda x: x <= 20),
        target_row("server CPU per ×3 spread add ≤ 130 µs", v["cpu_add"],
                   shown(v["cpu_add"], "{:.1f} µs"), lambda x: x <= 130),
        target_row(f"×3 spread full GET p99 ≤ run E's {RUN_E_P99['get']} ms", v["p99_get"],
                   shown(v["p99_get"], "{:.2f} ms"), lambda x: x <= RUN_E_P99["get"]),
        target_row(f"×3 spread add p99 ≤ run E's {RUN_E_P99['add']} ms", v["p99_add"],
                   shown(v["p99_add"], "{:.2f} ms"), lambda x: x <= RUN_E_P99["add"]),
    ]


def fmt_rps(v):
    return f"{v:,.0f}" if v is not None else "–"


def fmt_ms(v):
    return f"{v:.2f}" if v is not None else "–"


def share_of_ceiling(results):
    """gridraft ×3 spread's full GET as a percentage of the ceiling's (median runs), or None."""
    gr = median_run(load(results, "gridraft-3-spread", "get"))
    ceiling = median_run(load(results, CEILING, "get"))
    if not gr or not ceiling or not ceiling["total"]["rps"]:
        return None
    return gr["total"]["rps"] / ceiling["total"]["rps"] * 100


def replace_section(md_path, kind, body):
    begin, end = f"<!-- BEGIN {kind} -->", f"<!-- END {kind} -->"
    text = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(md_path, "w") as f:
        f.write(text)


def machine(results):
    with open(os.path.join(results, "machine.json")) as f:
        m = json.load(f)
    return (
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"{m['java']}; {m['etcd']}. Load average when the run started: "
        f"{' '.join(m['loadavg_start'])}. **Client and servers share the same cores** (the load "
        "generator is a lean raw-socket HTTP/1.1 client, but every request it sends costs the "
        "servers CPU too); everything on 127.0.0.1."
    )


def compare(results, md, command):
    rows, med = [], {}
    for system, title in SYSTEMS:
        cells = {}
        for w in WORKLOADS:
            r = median_run(load(results, system, w))
            if r:
                med[(system, w)] = r
                cells[w] = r
        if not cells:
            continue
        errors = sum(r["errors"]["total"] for w in WORKLOADS for r in load(results, system, w))
        line = [title]
        for w in WORKLOADS:
            r = cells.get(w)
            t = r["total"] if r else {}
            line += [fmt_rps(t.get("rps")), fmt_ms(t.get("p50_ms")), fmt_ms(t.get("p99_ms")),
                     fmt_ms(t.get("p999_ms"))]
        line.append(str(errors))
        rows.append("| " + " | ".join(line) + " |")

    def rps(system, w):
        r = med.get((system, w))
        return r["total"]["rps"] if r else None

    def p99(system, w):
        r = med.get((system, w))
        return r["total"]["p99_ms"] if r else None

    gr = "gridraft-3-spread"
    checks = [
        ("Full GET, ×3 spread vs Java full GET", ratio(rps(gr, "get"), rps("java-local", "get")), 5.0),
        ("Full GET, ×3 spread vs Java `/uri`", ratio(rps(gr, "get"), rps("java-local", "uri")), 1.5),
        ("Add, ×3 vs etcd ×3 put", ratio(rps(gr, "add"), rps("etcd-3", "add")), 2.0),
        ("Add, ×3 vs Java add", ratio(rps(gr, "add"), rps("java-local", "add")), 3.0),
        ("Grid mix, ×3 vs Java mix", ratio(rps(gr, "mix"), rps("java-local", "mix")), 3.0),
    ]
    ratio_rows = []
    for name, value, target in checks:
        verdict = "–" if value is None else ("met" if value >= target else f"missed by {(1 - value / target) * 100:.0f} %")
        ratio_rows.append(f"| {name} | {'–' if value is None else f'{value:.2f}×'} | ≥ {target}× | {verdict} |")
    gp, jp = p99(gr, "get"), p99("java-local", "get")
    verdict = "–" if gp is None or jp is None else ("met" if gp <= jp else f"missed: {gp:.2f} ms vs {jp:.2f} ms")
    ratio_rows.append(f"| Full GET p99, ×3 spread vs Java | {fmt_ms(gp)} ms vs {fmt_ms(jp)} ms | no worse | {verdict} |")
    etcd_rows = []
    for w, label in (("get", "linearizable read vs etcd range"), ("add", "durable add vs etcd put"), ("mix", "Grid mix vs etcd")):
        v = ratio(rps(gr, w), rps("etcd-3", w))
        etcd_rows.append(f"| gridraft ×3 spread, {label} | {'–' if v is None else f'{v:.2f}×'} |")
    for w in ("get", "uri", "add", "mix"):
        v = ratio(rps(gr, w), rps("java-local", w))
        etcd_rows.append(f"| gridraft ×3 spread vs Java LocalSessionMap, {w} | {'–' if v is None else f'{v:.2f}×'} |")
    cpu_rows = []
    for system, title in SYSTEMS:
        cells = [cpu_per_request(results, system, w) for w in WORKLOADS]
        if any(c is not None for c in cells):
            cpu_rows.append(f"| {title} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells) + " |")

    values = issue16_values(rps, lambda system, w: cpu_per_request(results, system, w), p99)
    transport_rows = issue16_rows(values)
    share = values["share"]
    etcd_rows.append(f"| gridraft ×3 spread full GET, share of the ceiling | {'–' if share is None else f'{share:.0f} %'} |")

    head = ("| System | full GET req/s | p50 ms | p99 ms | p99.9 ms | `/uri` req/s | p50 | p99 | p99.9 "
            "| add req/s | p50 | p99 | p99.9 | Grid mix req/s | p50 | p99 | p99.9 | errors |\n"
            "|---|" + "---:|" * 17)
    body = f"""## Side by side (generated by `scripts/bench.sh`)

{machine(results)}

Concurrency {med and next(iter(med.values()))['concurrency']}, {len(load(results, 'java-local', 'get')) or '?'} runs per cell, the
run with the median throughput shown (its latencies with it). Workloads: *full GET* and *`/uri`*
read 1 000 pre-loaded sessions at random; *add* re-adds over 10 000 ids (a durable, replicated
write on gridraft and etcd); *Grid mix* is, per session, one add, 20 full GETs, one `/uri`, one
DELETE (requests/s over all of them). Sessions carry about 3 KB of Chrome capabilities. Every
answer is verified (status, the session's own id and per-add token); *errors* counts wrong,
missing, stale or failed answers over all runs. etcd is driven through its JSON gateway
(`/v3/kv/range` linearizable, `/v3/kv/put`), its value being the same session JSON. The
*ceiling* row is the machine's limit for a full GET: a server that answers every one with
gridraft's answer (same bytes and headers, the asked id spliced in) and does nothing else, on
three ports with a member's threads each, measured the same way.

{head}
{chr(10).join(rows)}

### Targets (issue 6), from this run

| Target | Measured | Needed | |
|---|---:|---:|---|
{chr(10).join(ratio_rows)}

### Server CPU per request (µs)

The CPU (user and system, every thread) of the system's processes (every member; Java and
Redis; the three etcd members; the ceiling server) during each run's measured seconds, divided by
the requests answered in them; the median of the runs. The load generator's own CPU is not in it.

| System | full GET | `/uri` | add | Grid mix |
|---|---:|---:|---:|---:|
{chr(10).join(cpu_rows)}

### Targets (issue 16, peer streams), from this run

| Target | Measured | |
|---|---:|---|
{chr(10).join(transport_rows)}

### Ratios

| | |
|---|---:|
{chr(10).join(etcd_rows)}

Repeat with: `{command}`
"""
    replace_section(md, "COMPARE", body)


def scale(results, md, command):
    with open(os.path.join(results, "scale.json")) as f:
        s = json.load(f)
    lines = []
    base = None
    for lvl in s["levels"]:
        n = lvl["sessions"]
        runs = []
        for p in glob.glob(os.path.join(results, f"scale.get.{n}.*.json")):
            with open(p) as f:
                runs.append(json.load(f))
        r = median_run(runs)
        t = r["total"] if r else {}
        rps = t.get("rps")
        base = base or rps
        pre = os.path.join(results, f"scale.preload.{n}.json")
        rate = json.load(open(pre))["preload"]["rate"] if os.path.exists(pre) else None
        per = (lvl["rss_kb"] - s["rss_empty_kb"]) * 1024 / n
        settle = f"{lvl['settle_ms'] / 1000:.1f} s" if "settle_ms" in lvl else "–"
        lines.append(
            f"| {n:,} | {fmt_rps(rps)} | {fmt_ms(t.get('p50_ms'))} | {fmt_ms(t.get('p99_ms'))} | "
            f"{fmt_ms(t.get('p999_ms'))} | {'–' if not (rps and base) else f'{(rps / base - 1) * 100:+.0f} %'} | "
            f"{lvl['rss_kb'] / 1024:,.0f} MiB | {per:,.0f} B | {lvl['disk_kb'] / 1024:,.0f} MiB | {fmt_rps(rate)} | "
            f"{settle} |")
    j = s["java"]
    jper = (j["rss_kb"] - j["rss_empty_kb"]) * 1024 / j["sessions"]
    churn = "\n".join(
        f"| {c['sessions']:,} | {c['rss_kb'] / 1024:,.0f} MiB | {c['disk_kb'] / 1024:,.0f} MiB |" for c in s["churn"])
    rs = s["restart"]
    body = f"""## Scale (generated by `scripts/bench.sh scale`)

{machine(results)}

One gridraft member (fsync on), full GETs at concurrency 64 over the whole live population.
Memory per session = (RSS − RSS of the empty member) / sessions. Each level is measured once
the member is idle again after its load (*settled*: the snapshot the load triggered is written).

| Live sessions | full GET req/s | p50 ms | p99 ms | p99.9 ms | vs 1 000 | RSS | per session | disk | load rate (adds/s) | settled |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(lines)}

Java LocalSessionMap: {j['sessions']:,} sessions, RSS after a full GC {j['rss_empty_kb'] / 1024:,.0f} MiB empty →
{j['rss_kb'] / 1024:,.0f} MiB: **{jper:,.0f} B per session**.

Start to ready (`/readyz` 204) of an empty member, three starts: {', '.join(f'{v} ms' for v in s['ready_empty_ms'])}.

Restart of the member holding {rs['sessions']:,} sessions (SIGTERM, start, snapshot load and log
replay): ready after **{rs['ready_ms']} ms**, first full GET of the last session answered after
{rs['first_read_ms']} ms.

Churn on a fresh member (each session added, then removed):

| Sessions churned | RSS | disk |
|---:|---:|---:|
{churn}

Repeat with: `{command}`
"""
    replace_section(md, "SCALE", body)


def targets(results, md, command):
    """scripts/bench.sh targets: every round's cells and ratios, their medians, and issue 16's
    targets judged on the medians."""
    @functools.cache
    def run(system, w, i):
        path = os.path.join(results, f"{system}.{w}.{i}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    rounds = sorted({int(os.path.basename(f).split(".")[-2])
                     for f in glob.glob(os.path.join(results, "gridraft-3-spread.get.*.json"))})
    gr, cols = "gridraft-3-spread", []
    rows = []
    for i in rounds:
        def rate(system, w):
            r = run(system, w, i)
            return r["total"]["rps"] if r else None

        def cpu(system, w):
            r = run(system, w, i)
            return r["server_cpu"]["us_per_request"] if r and r.get("server_cpu") else None

        def tail(system, w):
            r = run(system, w, i)
            return r["total"]["p99_ms"] if r else None

        v = issue16_values(rate, cpu, tail)
        v.update({
            "java_uri": rate("java-local", "uri"), "java_add_rps": rate("java-local", "add"),
            "etcd_put": rate("etcd-3", "add"), "gr_get": rate(gr, "get"),
            "ceiling": rate(CEILING, "get"), "gr_add": rate(gr, "add"),
        })
        cols.append(v)
        rows.append((str(i), v))

    def median_of(vs):
        return {k: (statistics.median([c[k] for c in vs if c[k] is not None])
                    if any(c[k] is not None for c in vs) else None) for k in (vs[0] if vs else {})}

    med = median_of(cols)
    if cols:
        rows.append(("**median**", med))
    # Rounds in which the hypervisor left every cell its cores: the targets stay judged on all
    # rounds; this row shows how far the misses are the host's.
    quiet = [v for i, v in zip(rounds, cols)
             if all((lost := stolen(run(system, w, i))) is not None and lost < STEAL_QUIET
                    for system, w, _ in CORE_CELLS)]
    if quiet and len(quiet) < len(cols):
        rows.append((f"median of the {len(quiet)} round{'s' if len(quiet) > 1 else ''} without steal",
                     median_of(quiet)))

    def cell(x, fmt):
        return "–" if x is None else fmt.format(x)

    lines = []
    for name, v in rows:
        lines.append("| " + " | ".join([
            name, cell(v["java_uri"], "{:,.0f}"), cell(v["java_add_rps"], "{:,.0f}"),
            cell(v["etcd_put"], "{:,.0f}"), cell(v["ceiling"], "{:,.0f}"), cell(v["gr_get"], "{:,.0f}"),
            cell(v["gr_add"], "{:,.0f}"), cell(v["share"], "{:.0f} %"), cell(v["uri"], "{:.2f}×"),
            cell(v["java_add"], "{:.2f}×"), cell(v["etcd_add"], "{:.2f}×"), cell(v["cpu_get"], "{:.1f}"),
            cell(v["cpu_add"], "{:.1f}"), cell(v["p99_get"], "{:.2f}"), cell(v["p99_add"], "{:.2f}"),
        ]) + " |")
    cores = cores_table(run, rounds)
    first = run(gr, "get", rounds[0]) if rounds else None
    how = (f"{first['seconds']:.0f} s each at concurrency {first['concurrency']}" if first
           else "no runs recorded")
    body = f"""## Issue 16's targets, cells interleaved (generated by `scripts/bench.sh targets`)

{machine(results)}

Java LocalSessionMap, etcd ×3, gridraft ×3 and the ceiling server run together; each round
measures every cell once, in turn ({how}), after a round of warm-up that is not
recorded. Every round's add cells write the same 10 000 sessions again (the warm-up round creates
them), so each round measures maps of one size. Each ratio is taken within its round, so a drift
of the host's speed between rounds falls on both sides of it; the median row is the median of
each column over the rounds, and the targets are judged on it. Server CPU is every member's, during the measured seconds, per request.

| Round | Java `/uri` req/s | Java add | etcd put | ceiling full GET | gridraft ×3 spread full GET | gridraft add | share of the ceiling | full GET ÷ Java `/uri` | add ÷ Java add | add ÷ etcd put | server CPU per full GET µs | per add µs | full GET p99 ms | add p99 ms |
|---|{"---:|" * 14}
{chr(10).join(lines)}
{cores}
| Target (issue 16) | Median | |
|---|---:|---|
{chr(10).join(issue16_rows(med) if med else [])}

Repeat with: `{command}`
"""
    replace_section(md, "TARGETS", body)


# The cells issue 16's ratios compare, for the table of where the cores went.
CORE_CELLS = [("java-local", "uri", "Java `/uri`"), ("java-local", "add", "Java add"),
              ("etcd-3", "add", "etcd put"), (CEILING, "get", "ceiling full GET"),
              ("gridraft-3-spread", "get", "gridraft full GET"),
              ("gridraft-3-spread", "add", "gridraft add")]
# Cores the hypervisor may take in a cell of a round the "without steal" row counts.
STEAL_QUIET = 0.1


def machine_of(r):
    """A run's record of the machine's cores, if it has one."""
    return (r or {}).get("machine")


def stolen(r):
    m = machine_of(r)
    return m["cores_stolen"] if m else None


def cores_table(run, rounds):
    """How the machine's cores went in each round's cells: busy, idle and stolen by the
    hypervisor (cores, from /proc/stat), and the load generator's CPU per full GET. Empty for
    results recorded before gridraft-bench sampled them."""
    def one(r):
        m = machine_of(r)
        if not m:
            return "–"
        return f"{m['cores_busy']:.2f} / {m['cores_idle']:.2f} / {m['cores_stolen']:.2f}"

    def client(r):
        c = (r or {}).get("client_cpu")
        return "–" if not c else f"{c['us_per_request']:.1f}"

    rows = []
    for i in rounds:
        cells = [one(run(system, w, i)) for system, w, _ in CORE_CELLS]
        gens = [client(run(system, "get", i)) for system in (CEILING, "gridraft-3-spread")]
        rows.append((i, cells, gens))
    if not any(v != "–" for _, cells, _ in rows for v in cells):
        return ""
    head = " | ".join(title for _, _, title in CORE_CELLS)
    body = "\n".join(f"| {i} | " + " | ".join(cells) + " | " + " / ".join(gens) + " |"
                     for i, cells, gens in rows)
    return f"""
Where the machine's cores went in each cell's measured seconds (`/proc/stat`): busy / idle /
taken by the hypervisor (steal), in cores. A cell with cores idle while its requests were in
flight was waiting, not computing; a cell with cores stolen ran on a smaller machine than the
cell it is compared with. The "without steal" row above is the median of the rounds in which no
cell lost {STEAL_QUIET} of a core or more (shown only when some rounds did).

| Round | {head} | load generator µs per full GET (ceiling / gridraft) |
|---|{"---|" * (len(CORE_CELLS) + 1)}
{body}
"""


def summary(results, _md, _command):
    """Medians per system and workload, printed (for before/after runs), and gridraft ×3
    spread's full GET as a share of the ceiling."""
    for system, _ in SYSTEMS:
        for w in WORKLOADS:
            r = median_run(load(results, system, w))
            if r:
                t = r["total"]
                cpu = cpu_per_request(results, system, w)
                print(f"{system:<32} {w:<4} {t['rps']:>9,.0f} req/s  p50 {t['p50_ms']:7.2f}  "
                      f"p99 {t['p99_ms']:7.2f}  p99.9 {t['p999_ms']:7.2f}  errors {r['errors']['total']}"
                      + ("" if cpu is None else f"  server CPU {cpu:.1f} us/req"))
    share = share_of_ceiling(results)
    if share is not None:
        print(f"gridraft-3-spread get: {share:.0f} % of the ceiling ({CEILING} get)")


if __name__ == "__main__":
    kind, results, md, command = sys.argv[1:5]
    {"compare": compare, "targets": targets, "scale": scale, "summary": summary}[kind](
        results, md, command)
