"""The suite stands alone: a clone with nothing beside it collects every test, without errors.

The evaluation data beside the repository (``../shared/eval``) is for tuning and benchmarks only;
CI runs with it present, so these tests make sure nothing under ``tests/`` needs it:

* the repository's files (``git ls-files``: tracked, plus new files not ignored) are copied into
  a temporary directory with nothing beside it, and ``pytest --collect-only`` there (importing
  the copy's own ``imgcache``) must collect the same tests as this tree, with no error;
* no file under ``tests/`` names that data (this file's own patterns aside).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds for one collection (about 5 s here)

# A path to the evaluation data, in any spelling a test could use: "../shared", "shared/eval",
# Path(...) / "shared" / "eval", os.path.join(..., "shared", "eval").
EVAL_PATH = re.compile(r"\.\.[/\\]+shared\b|\bshared\W{1,8}eval\b")


def _repository_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the repository's files are what git lists")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).exists()]


def _env(tree: Path) -> dict[str, str]:
    """The environment of a process that imports ``tree``'s own imgcache."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _collect(tree: Path) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """``python -m pytest --collect-only -q`` in ``tree``: the collected test ids, and the process."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                              cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"collecting the tests in {tree} took more than {TIMEOUT} s; output:\n{exc.stdout}")
    ids = [line for line in proc.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    return ids, proc


@pytest.mark.slow  # collects the suite twice, in processes
@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_a_copy_with_nothing_beside_it_collects_every_test(tmp_path: Path) -> None:
    clone = tmp_path / "main"
    for name in _repository_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"]  # nothing beside the copy

    where = subprocess.run([sys.executable, "-c", "import imgcache; print(imgcache.__file__)"], cwd=clone,
                           env=_env(clone), capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(clone.resolve()), f"the copy imports {where}"

    copied, proc = _collect(clone)
    output = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"collection in the copy exited {proc.returncode}\n{output}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ tests? collected in [\d.]+s", summary), f"{summary!r}\n{output}"
    assert int(summary.split()[0]) == len(copied) > 0, output

    here, own = _collect(ROOT)
    assert own.returncode == 0, f"collection in {ROOT} exited {own.returncode}:\n{own.stdout[-6000:]}"
    missing, extra = sorted(set(here) - set(copied)), sorted(set(copied) - set(here))
    assert not missing and not extra, f"only in this tree: {missing[:20]}; only in the copy: {extra[:20]}"
    assert len(copied) == len(here)


def test_no_test_names_the_evaluation_data_beside_the_repository() -> None:
    me = Path(__file__).resolve()
    found = []
    for path in sorted((ROOT / "tests").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.resolve() == me:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if EVAL_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, ("tests must make their own pictures and data (or take them from a test "
                       "dependency), not read the evaluation data beside the repository:\n" + "\n".join(found))
