"""Unit tests of the linearizability checker: histories that must pass, histories that must be
rejected, and a randomised cross-check against brute force over all orders.

Run: python3 -m unittest discover -s cluster-tests -p 'test_*.py'
"""

import itertools
import math
import random
import time
import unittest

from linearizability import Op, check_history, check_key, explain, step

INF = math.inf


def add(v, t0, t1, key="k", client=0):
    return Op(key, "add", t0, t1, value=v, client=client)


def rem(t0, t1, key="k", client=0):
    return Op(key, "remove", t0, t1, client=client)


def get(out, t0, t1, key="k", client=0):
    return Op(key, "get", t0, t1, output=out, client=client)


def ok(ops):
    return check_key("k", ops).ok


class MustPass(unittest.TestCase):
    def test_empty_history(self):
        self.assertTrue(ok([]))

    def test_sequential_lifecycle(self):
        self.assertTrue(ok([add("a", 0, 1), get("a", 2, 3), get("a", 4, 5), rem(6, 7), get(None, 8, 9)]))

    def test_read_of_missing_key(self):
        self.assertTrue(ok([get(None, 0, 1)]))

    def test_read_concurrent_with_add_may_see_either(self):
        self.assertTrue(ok([add("a", 0, 10), get(None, 1, 2), get("a", 3, 4)]))
        self.assertTrue(ok([add("a", 0, 10), get("a", 1, 2)]))

    def test_concurrent_writes_may_order_either_way(self):
        self.assertTrue(ok([add("a", 0, 10), add("b", 0, 10), get("b", 11, 12)]))
        self.assertTrue(ok([add("a", 0, 10), add("b", 0, 10), get("a", 11, 12)]))

    def test_touching_intervals_count_as_concurrent(self):
        self.assertTrue(ok([add("a", 0, 5), get(None, 5, 6)]))

    def test_unknown_add_may_take_effect_late(self):
        # The client gave up on the add at 1; it landed between 3 and 5.
        self.assertTrue(ok([add("a", 0, INF), get(None, 2, 3), get("a", 5, 6)]))

    def test_unknown_add_may_never_take_effect(self):
        self.assertTrue(ok([add("a", 0, INF), get(None, 2, 3), get(None, 5, 6)]))

    def test_unknown_remove_then_re_add(self):
        self.assertTrue(ok([add("a", 0, 1), rem(2, INF), get("a", 3, 4), add("b", 5, 6), get("b", 7, 8)]))

    def test_re_add_replaces(self):
        self.assertTrue(ok([add("a", 0, 1), add("b", 2, 3), get("b", 4, 5), rem(6, 7), add("c", 8, 9), get("c", 10, 11)]))

    def test_independent_keys(self):
        history = [add("a", 0, 1, key="x"), get("a", 2, 3, key="x"),
                   add("b", 0, 1, key="y"), get(None, 0.5, 0.6, key="y"), get("b", 2, 3, key="y")]
        self.assertEqual(check_history(history), (True, []))


class MustReject(unittest.TestCase):
    def assert_rejected(self, ops):
        r = check_key("k", ops)
        self.assertIs(r.ok, False, explain(r))
        self.assertTrue(explain(r))
        return r

    def test_stale_read_after_acknowledged_add(self):
        # The lost-write / stale-read shape: the add was acknowledged, then a read missed it.
        r = self.assert_rejected([add("a", 0, 1), get(None, 2, 3)])
        self.assertEqual(r.best_prefix, [0])
        self.assertEqual(r.stuck_at, [1])

    def test_read_after_acknowledged_remove_sees_the_session(self):
        self.assert_rejected([add("a", 0, 1), rem(2, 3), get("a", 4, 5)])

    def test_read_of_a_value_never_written(self):
        self.assert_rejected([add("a", 0, 1), get("z", 2, 3)])

    def test_read_of_the_overwritten_value(self):
        self.assert_rejected([add("a", 0, 1), add("b", 2, 3), get("a", 4, 5)])

    def test_reads_disagree_on_the_order_of_concurrent_writes(self):
        # Knossos's classic: two writes overlap, but two later sequential readers see them in
        # opposite orders (a, then b, then a again).
        self.assert_rejected([add("a", 0, 10), add("b", 0, 10), get("a", 11, 12), get("b", 13, 14), get("a", 15, 16)])

    def test_value_flips_back_without_a_write(self):
        self.assert_rejected([add("a", 0, 1), add("b", 0, 1), get("b", 2, 3), get("a", 4, 5)])

    def test_unknown_add_takes_effect_only_once(self):
        # Present, then absent, then present again with only one (unknown) add: impossible.
        self.assert_rejected([add("a", 0, INF), get("a", 2, 3), rem(4, 5), get(None, 6, 7), get("a", 8, 9)])

    def test_session_resurrected_after_remove(self):
        self.assert_rejected([add("a", 0, 1), get("a", 2, 3), rem(4, 5), get(None, 6, 7), get("a", 8, 9)])

    def test_one_bad_key_fails_the_history(self):
        history = [add("a", 0, 1, key="x"), get("a", 2, 3, key="x"),
                   add("b", 0, 1, key="y"), get(None, 2, 3, key="y")]
        good, bad = check_history(history)
        self.assertFalse(good)
        self.assertEqual([r.key for r in bad], ["y"])


def brute_force(ops):
    """Linearizable iff some total order respects real time and the model accepts it (unknown
    writes may also be left out)."""
    n = len(ops)
    optional = [i for i, op in enumerate(ops) if math.isinf(op.complete)]
    for drop_mask in range(1 << len(optional)):
        dropped = {optional[j] for j in range(len(optional)) if drop_mask >> j & 1}
        chosen = [i for i in range(n) if i not in dropped]
        for order in itertools.permutations(chosen):
            pos = {i: p for p, i in enumerate(order)}
            if any(ops[a].complete < ops[b].invoke and pos[a] > pos[b] for a in chosen for b in chosen):
                continue
            state, good = None, True
            for i in order:
                good, state = step(state, ops[i])
                if not good:
                    break
            if good:
                return True
    return False


class CrossCheck(unittest.TestCase):
    def test_agrees_with_brute_force_on_random_small_histories(self):
        rng = random.Random(20261128)
        verdicts = {True: 0, False: 0}
        for _ in range(600):
            ops = []
            for _ in range(rng.randint(1, 6)):
                t0 = rng.randint(0, 12)
                t1 = t0 + rng.randint(0, 5)
                kind = rng.choice(["add", "add", "remove", "get", "get", "get"])
                if kind != "get" and rng.random() < 0.15:
                    t1 = INF
                if kind == "add":
                    ops.append(add(rng.choice("ab"), t0, t1))
                elif kind == "remove":
                    ops.append(rem(t0, t1))
                else:
                    ops.append(get(rng.choice(["a", "b", None]), t0, t1))
            expected = brute_force(ops)
            self.assertEqual(check_key("k", ops).ok, expected, ops)
            verdicts[expected] += 1
        # Both verdicts are exercised.
        self.assertGreater(verdicts[True], 50)
        self.assertGreater(verdicts[False], 50)


class Scale(unittest.TestCase):
    def test_a_long_concurrent_key_history_is_fast(self):
        rng = random.Random(7)
        ops, t, state = [], 0.0, None
        for i in range(400):
            t += rng.random()
            kind = rng.choice(["add", "get", "get", "remove"])
            # Writes are sequential and each read overlaps its neighbours a little.
            if kind == "add":
                state = f"v{i}"
                ops.append(add(state, t, t + 0.5))
            elif kind == "remove":
                state = None
                ops.append(rem(t, t + 0.5))
            else:
                ops.append(get(state, t - 0.2, t + 0.7))
            t += 0.6
        for i in range(10):
            ops.append(add(f"u{i}", rng.random() * t, INF))
        started = time.monotonic()
        self.assertTrue(check_key("k", ops).ok)
        self.assertLess(time.monotonic() - started, 10)


if __name__ == "__main__":
    unittest.main()
