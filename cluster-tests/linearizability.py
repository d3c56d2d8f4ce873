"""Linearizability checking of a recorded history against a per-key register model.

This is the Wing & Gong search with Lowe's memoisation, as porcupine implements it
(github.com/anishathalye/porcupine, `checker.go`; knossos's `wgl` checker is the same idea), plus
P-compositionality: a history of independent keys is linearizable iff each key's sub-history is
(Herlihy & Wing, "locality"), so every key is checked on its own.

The model: each key is a register holding `None` (no session) or a value (the session's URI).
`add(v)` sets it, `remove()` clears it, a read returns it. A session re-added with another URI
replaces the record, so a re-add is an overwrite.

Operations carry `invoke` and `complete` times from one clock. An operation whose outcome is
unknown (the client timed out, or a write got an error answer and may still take effect later)
has `complete = math.inf`: it may take effect at any point after its invocation, or never
(a write that never happens is linearised at the very end, where nothing observes it). Reads
without an answer have no effect and must be dropped before checking.

The search: walk a doubly linked list of call/return events in time order. At a call, try to
linearise that operation now (the model must accept it given the state); if the resulting
(set of linearised operations, state) pair was seen before, skip it (Lowe's cache), otherwise
take it and restart from the head. Reaching a return event whose call is still pending means
the current prefix cannot be extended: backtrack to the last choice. The history is
linearizable iff the list empties.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

WRITE_KINDS = ("add", "remove")
READ_KINDS = ("get", "uri")


@dataclass
class Op:
    """One client operation on one key.

    kind: "add" (value = the URI written), "remove", "get" / "uri" (output = the URI read, or
    None for "no such session"). complete = math.inf when the outcome is unknown.
    """

    key: str
    kind: str
    invoke: float
    complete: float
    value: Optional[str] = None
    output: Optional[str] = None
    client: Any = None
    id: Any = None
    extra: dict = field(default_factory=dict)


def step(state, op):
    """The register model: (accepted, new state)."""
    if op.kind == "add":
        return True, op.value
    if op.kind == "remove":
        return True, None
    if op.kind in READ_KINDS:
        return op.output == state, state
    raise ValueError(f"unknown operation kind {op.kind!r}")


class _Entry:
    __slots__ = ("is_call", "time", "op_index", "match", "prev", "next")

    def __init__(self, is_call, time, op_index):
        self.is_call = is_call
        self.time = time
        self.op_index = op_index
        self.match = None
        self.prev = None
        self.next = None


def _build_list(ops):
    events = []
    for i, op in enumerate(ops):
        if op.complete < op.invoke:
            raise ValueError(f"operation {op.id} completes before it is invoked")
        call = _Entry(True, op.invoke, i)
        ret = _Entry(False, op.complete, i)
        call.match = ret
        events.append(call)
        events.append(ret)
    # Time order; at equal times calls come first, so touching operations count as concurrent
    # (the permissive choice, as porcupine makes it).
    events.sort(key=lambda e: (e.time, 0 if e.is_call else 1))
    head = _Entry(True, -math.inf, -1)
    prev = head
    for e in events:
        prev.next = e
        e.prev = prev
        prev = e
    return head


def _lift(entry):
    """Removes a call and its return from the list."""
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev
    ret = entry.match
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(entry):
    """Puts back what `_lift` removed (in reverse order)."""
    ret = entry.match
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


@dataclass
class KeyResult:
    key: str
    ok: bool
    ops: list
    # On failure: the longest linearisation found (op indexes in order) and the operations that
    # could not be linearised after it. On timeout, ok is None.
    best_prefix: list = field(default_factory=list)
    stuck_at: list = field(default_factory=list)
    states_explored: int = 0


def check_key(key, ops, initial=None, max_states=2_000_000):
    """Checks one key's operations. Returns a KeyResult (ok True, False, or None if the search
    gave up after `max_states` cache entries)."""
    ops = list(ops)
    if not ops:
        return KeyResult(key, True, ops)
    head = _build_list(ops)
    cache = set()
    calls = []  # stack of (entry, state before it)
    state = initial
    linearized = 0
    best = []
    entry = head.next
    explored = 0
    while head.next is not None:
        if entry.is_call:
            op = ops[entry.op_index]
            accepted, new_state = step(state, op)
            if accepted:
                new_lin = linearized | (1 << entry.op_index)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    explored += 1
                    if explored > max_states:
                        return KeyResult(key, None, ops, states_explored=explored)
                    calls.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    _lift(entry)
                    if len(calls) > len(best):
                        best = [c[0].op_index for c in calls]
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not calls:
                return _failure(key, ops, best, explored)
            top, top_state = calls.pop()
            state = top_state
            linearized &= ~(1 << top.op_index)
            _unlift(top)
            entry = top.next
    return KeyResult(key, True, ops, states_explored=explored)


def _failure(key, ops, best, explored):
    """Describes where the longest linearisation got stuck: the operations that were pending
    (invoked, not linearised) when the first of them had to complete."""
    done = set(best)
    state = None
    for i in best:
        _, state = step(state, ops[i])
    pending = [i for i in range(len(ops)) if i not in done]
    if pending:
        first_return = min(ops[i].complete for i in pending)
        stuck = [i for i in pending if ops[i].invoke <= first_return]
    else:
        stuck = []
    r = KeyResult(key, False, ops, best_prefix=best, stuck_at=stuck, states_explored=explored)
    r.state_after_prefix = state
    return r


def check_history(ops, max_states=2_000_000):
    """P-compositional check: groups by key and checks each group. Returns (ok, [KeyResult of
    every key that failed or was undecided])."""
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    bad = []
    for key, key_ops in by_key.items():
        r = check_key(key, key_ops, max_states=max_states)
        if r.ok is not True:
            bad.append(r)
    return (not bad), bad


def fmt_time(t, origin=0.0):
    return "    inf" if math.isinf(t) else f"{t - origin:8.3f}"


def explain(result, origin=0.0):
    """A human-readable account of a failed key: its history in invocation order, the longest
    linearisation found, and the operations that could not be placed after it."""
    lines = []
    verdict = {True: "linearizable", False: "NOT linearizable", None: "undecided (search limit)"}
    lines.append(f"key {result.key}: {verdict[result.ok]} "
                 f"({len(result.ops)} operations, {result.states_explored} states explored)")
    order = sorted(range(len(result.ops)), key=lambda i: (result.ops[i].invoke, result.ops[i].complete))
    for i in order:
        lines.append("  " + describe(result.ops[i], i, origin))
    if result.ok is False:
        lines.append("  longest linearisation: " + (" -> ".join(f"#{i}" for i in result.best_prefix) or "(empty)"))
        lines.append(f"  register after it: {getattr(result, 'state_after_prefix', None)!r}")
        lines.append("  none of these can come next: " + ", ".join(f"#{i}" for i in result.stuck_at))
    return "\n".join(lines)


def describe(op, index, origin=0.0):
    if op.kind == "add":
        what = f"add({op.value!r})"
    elif op.kind == "remove":
        what = "remove()"
    else:
        what = f"{op.kind}() -> {op.output!r}"
    outcome = op.extra.get("outcome", "")
    detail = op.extra.get("detail", "")
    return (f"#{index:<3} [{fmt_time(op.invoke, origin)} .. {fmt_time(op.complete, origin)}] "
            f"client {op.client!s:<8} {what:<48} {outcome} {detail}").rstrip()
