"""House style that a clean clone must keep: C formatted by .clang-format, shell scripts clean
under shellcheck."""
import shutil
import subprocess

import pytest

from conftest import ROOT


def tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return out


def test_c_sources_are_formatted_with_the_project_style():
    if not shutil.which("clang-format"):
        pytest.fail("clang-format missing: ./quakestream deps installs it")
    files = tracked("*.c", "*.h")
    assert files
    r = subprocess.run(["clang-format", "--dry-run", "--Werror", *files], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_shell_scripts_pass_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck missing: ./quakestream deps installs it")
    scripts = ["quakestream", ".ci/run"] + tracked("*.sh")
    r = subprocess.run(["shellcheck", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
