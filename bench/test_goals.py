#!/usr/bin/env python3
"""Unit tests of bench/goals.py: the goals file and the comparison of two
runs (`bench/compare --check`, `bench/compare.py --diff`). Runs no
benchmark: `python3 bench/test_goals.py` (scripts/test runs it)."""

import copy
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goals as G  # noqa: E402


def measure(field, unit, a, c, name=None):
    """A measure as compare.py writes it, from per-round figures."""
    m = {"name": name or field, "field": field, "unit": unit, "chart": None}
    for label, vals in (("armitage", a), ("CppNix", c)):
        s = sorted(vals)
        m[label] = {"median": s[len(s) // 2], "min": s[0], "max": s[-1], "values": list(vals)}
    m["ratio"] = m["armitage"]["median"] / m["CppNix"]["median"]
    return m


def run(rows, sizes=None, smoke=False):
    return {"rows": [{"key": k, "title": f"the {k} row", "measures": ms} for k, ms in rows],
            "sizes": sizes or {"noop": 10}, "smoke_test": smoke, "date": "2026-01-01", "rounds": 3}


def baseline():
    # noop cpu: per-round ratios 0.20, 0.21, 0.22 (spread 0.02), median 0.21
    # subst paths/s: ratios 1.5, 1.6, 1.7 (spread 0.2), median 1.6
    return run([("noop", [measure("cpu", "s", [2.0, 2.1, 2.2], [10.0, 10.0, 10.0])]),
                ("subst", [measure("paths/s", "/s", [150, 160, 170], [100, 100, 100])])])


NOOP_CPU_GOAL = {"what": "no-op CPU", "row": "noop", "field": "cpu", "max": 0.3, "enforce": True}
SUBST_GOAL = {"what": "subst rate", "row": "subst", "field": "paths/s", "min": 2.0, "enforce": False}


class RatiosTest(unittest.TestCase):
    def test_round_ratios_pair_rounds(self):
        m = measure("cpu", "s", [2.0, 4.0, 3.0], [10.0, 8.0, 6.0])
        self.assertEqual(G.round_ratios(m), [0.2, 0.5, 0.5])
        self.assertAlmostEqual(G.spread(m), 0.3)

    def test_round_ratios_without_values_take_the_widest(self):
        m = measure("cpu", "s", [2.0, 4.0], [8.0, 10.0])
        for label in ("armitage", "CppNix"):
            del m[label]["values"]
        self.assertEqual(G.ratio_range(m), (0.2, 0.5))


class CompareTest(unittest.TestCase):
    def verdicts(self, old, new):
        return {(e["row"], e["field"]): e["verdict"] for e in G.compare(old, new)}

    def test_same_run_is_within_noise_and_passes(self):
        old = baseline()
        self.assertEqual(set(self.verdicts(old, old).values()), {"within noise"})
        self.assertEqual(G.check(old, old, [NOOP_CPU_GOAL]), ([], []))

    def test_worse_beyond_noise_is_a_regression(self):
        new = baseline()
        new["rows"][0]["measures"][0] = measure("cpu", "s", [2.5, 2.6, 2.7], [10.0, 10.0, 10.0])
        self.assertEqual(self.verdicts(baseline(), new)[("noop", "cpu")], "worse")
        failures, _ = G.check(baseline(), new, [])
        self.assertEqual(len(failures), 1)
        self.assertIn("regression: the noop row: cpu: ratio 0.21 -> 0.26", failures[0])

    def test_worse_within_noise_is_not(self):
        new = baseline()
        # median 0.22, within the baseline's spread of 0.02 of 0.21
        new["rows"][0]["measures"][0] = measure("cpu", "s", [2.1, 2.2, 2.3], [10.0, 10.0, 10.0])
        self.assertEqual(self.verdicts(baseline(), new)[("noop", "cpu")], "within noise")
        self.assertEqual(G.check(baseline(), new, []), ([], []))

    def test_a_noisy_new_run_widens_the_noise(self):
        new = baseline()
        # median 0.26 but rounds from 0.15 to 0.40: the spread (0.25) covers the change
        new["rows"][0]["measures"][0] = measure("cpu", "s", [1.5, 2.6, 4.0], [10.0, 10.0, 10.0])
        self.assertEqual(self.verdicts(baseline(), new)[("noop", "cpu")], "within noise")

    def test_rates_are_worse_when_lower(self):
        new = baseline()
        new["rows"][1]["measures"][0] = measure("paths/s", "/s", [110, 120, 130], [100, 100, 100])
        self.assertEqual(self.verdicts(baseline(), new)[("subst", "paths/s")], "worse")
        new["rows"][1]["measures"][0] = measure("paths/s", "/s", [200, 210, 220], [100, 100, 100])
        self.assertEqual(self.verdicts(baseline(), new)[("subst", "paths/s")], "better")
        self.assertEqual(G.check(baseline(), new, []), ([], []))

    def test_lower_cpu_is_better(self):
        new = baseline()
        new["rows"][0]["measures"][0] = measure("cpu", "s", [1.0, 1.1, 1.2], [10.0, 10.0, 10.0])
        self.assertEqual(self.verdicts(baseline(), new)[("noop", "cpu")], "better")

    def test_rows_only_in_one_run(self):
        new = copy.deepcopy(baseline())
        del new["rows"][1]
        new["rows"].append({"key": "graph", "title": "graph", "measures": [measure("wall", "s", [1], [2])]})
        v = self.verdicts(baseline(), new)
        self.assertEqual(v[("subst", "paths/s")], "gone")
        self.assertEqual(v[("graph", "wall")], "new")

    def test_incompatible_runs(self):
        self.assertIsNone(G.incompatible(baseline(), baseline()))
        self.assertIn("smoke test", G.incompatible(baseline(), run([], smoke=True)))
        self.assertIn("different sizes (noop)", G.incompatible(baseline(), run([], sizes={"noop": 5})))

    def test_diff_table_shows_both_ratios_and_the_verdict(self):
        new = baseline()
        new["rows"][0]["measures"][0] = measure("cpu", "s", [2.5, 2.6, 2.7], [10.0, 10.0, 10.0])
        lines = G.diff_table(baseline(), new, [NOOP_CPU_GOAL])
        row = next(line for line in lines if line.startswith("the noop row"))
        self.assertIn("0.21 (0.20–0.22)", row)
        self.assertIn("0.26 (0.25–0.27)", row)
        self.assertIn("+0.05", row)
        self.assertIn("worse", row)
        self.assertIn("<= 0.3: met", row)


class GoalsTest(unittest.TestCase):
    def test_enforced_goal_not_met_fails_the_check(self):
        new = baseline()
        new["rows"][0]["measures"][0] = measure("cpu", "s", [3.5, 3.5, 3.5], [10.0, 10.0, 10.0])
        old = copy.deepcopy(new)  # no regression: only the goal
        failures, notes = G.check(old, new, [NOOP_CPU_GOAL])
        self.assertEqual(failures, ["goal not met: no-op CPU (the noop row): ratio 0.35, goal <= 0.3"])
        self.assertEqual(notes, [])

    def test_goal_not_enforced_is_only_a_note(self):
        failures, notes = G.check(baseline(), baseline(), [SUBST_GOAL])
        self.assertEqual(failures, [])
        self.assertEqual(notes, ["goal not met: subst rate (the subst row): ratio 1.60, goal >= 2.0 (not enforced)"])

    def test_goal_text(self):
        self.assertEqual(G.goal_text(NOOP_CPU_GOAL, 0.16), "<= 0.3: met")
        self.assertEqual(G.goal_text(SUBST_GOAL, 1.5), ">= 2.0: NOT met")
        self.assertEqual(G.goal_text(SUBST_GOAL, None), ">= 2.0: n/a")

    def test_the_repository_goals_load(self):
        goals = G.load()
        self.assertTrue(goals)
        # bench/build.py's table shows these, by its own measure names
        self.assertEqual(set(G.build_goals(goals)), {
            ("noop", "daemon CPU p50"), ("graph", "daemon CPU per build"), ("graph", "wall"),
            ("sandbox", "added wall p50"), ("sandbox", "added wall p99"), ("subst", "paths/s")})

    def test_bad_goals_are_refused(self):
        for text, why in [
            ('[[goal]]\nwhat = "x"\nrow = "a"\nfield = "b"\nmax = 1.0\nmin = 0.5\n', "exactly one of"),
            ('[[goal]]\nwhat = "x"\nrow = "a"\nmax = 1.0\n', "go together"),
            ('[[goal]]\nwhat = "x"\nrow = "a"\nfield = "b"\nmax = 1.0\nbound = 3\n', "unknown keys bound"),
            ('[[goal]]\nwhat = "x"\nbuild = "wall"\nmax = 1.0\n', "workload = "),
        ]:
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(text)
            try:
                with self.assertRaisesRegex(G.GoalsError, why):
                    G.load(f.name)
            finally:
                os.unlink(f.name)

    def test_baseline_names(self):
        self.assertTrue(G.FULL_RUN.match("2026-11-22.json"))
        self.assertFalse(G.FULL_RUN.match("2026-11-22-quick.json"))
        self.assertFalse(G.FULL_RUN.match("2026-11-22-partial.json"))


if __name__ == "__main__":
    unittest.main()
