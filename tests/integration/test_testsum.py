"""tools/testsum.py: the closing line counts every case, skips are not failures, crashes are."""
import json
import os
import subprocess
import sys

from conftest import ROOT

TOOL = os.path.join(ROOT, "tools", "testsum.py")


def run(tmp_path, meson_tests=(), junit=None):
    with open(tmp_path / "unit.testlog.json", "w") as f:
        for t in meson_tests:
            f.write(json.dumps(t) + "\n")
    if junit:
        (tmp_path / "it.junit.xml").write_text(junit)
    r = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True)
    return r.returncode, r.stdout.strip().splitlines()[-1], r.stdout


def test_counts_tap_cases_and_treats_cmocka_skips_as_skips(tmp_path):
    rc, last, _ = run(tmp_path, [{"name": "a", "result": "OK", "returncode": 0,
                                  "stdout": "1..3\nok 1 - x\nnot ok 2 # SKIP y\nok 3 - z\n"}])
    assert (rc, last) == (0, "2 passed, 0 failed")


def test_a_failing_case_fails_the_run_and_is_listed(tmp_path):
    rc, last, out = run(tmp_path, [{"name": "a", "result": "FAIL", "returncode": 1,
                                    "stdout": "1..2\nok 1 - x\nnot ok 2 - broken_case\n"}])
    assert (rc, last) == (1, "1 passed, 1 failed")
    assert "broken_case" in out


def test_a_binary_that_crashes_after_passing_cases_counts_one_failure(tmp_path):
    rc, last, out = run(tmp_path, [{"name": "leaky", "result": "FAIL", "returncode": 1,
                                    "stdout": "1..1\nok 1 - x\n"}])
    assert (rc, last) == (1, "1 passed, 1 failed")
    assert "leaky" in out


def test_junit_failures_errors_and_skips_are_counted(tmp_path):
    junit = """<testsuites><testsuite name="s">
      <testcase classname="c" name="ok1"/>
      <testcase classname="c" name="bad"><failure message="x"/></testcase>
      <testcase classname="c" name="err"><error message="y"/></testcase>
      <testcase classname="c" name="sk"><skipped/></testcase>
    </testsuite></testsuites>"""
    rc, last, _ = run(tmp_path, [], junit)
    assert (rc, last) == (1, "1 passed, 2 failed")


def test_nothing_run_is_a_failure(tmp_path):
    rc, last, _ = run(tmp_path, [])
    assert (rc, last) == (1, "0 passed, 0 failed")
