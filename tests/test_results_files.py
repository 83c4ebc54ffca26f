"""Results files under concurrent writers, kills and full disks (empirical._util.files, empirical._util.results)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from empirical._util.files import OutputInUse, atomic_write, check_output_file, locked, remove_stale_temporaries
from empirical._util.results import update_json, upsert_row, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]

_WRITER = """
import sys, time
from empirical._util.results import upsert_row
path, who, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
while time.time() < start:  # every writer begins at the same moment
    time.sleep(0.001)
for i in range(n):
    upsert_row(path, {"writer": who, "i": i}, ("writer", "i"))
"""


def test_concurrent_writers_keep_every_row(tmp_path):
    # Without the lock, three shell runs on one --out kept 128 of 297 rows: each rewrote a stale read.
    import time

    path, writers, n = tmp_path / "rows.json", 4, 40
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = str(time.time() + 3.0)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w), str(n), start], env=env, cwd=tmp_path)
        for w in range(writers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * writers
    rows = json.loads(path.read_text())
    assert len(rows) == writers * n
    assert {(r["writer"], r["i"]) for r in rows} == {(w, i) for w in range(writers) for i in range(n)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]  # no lock or temporary file left


def test_a_held_lock_refuses_a_second_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom empirical._util.files import locked\n"
         "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(30)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUse, match=rf"run={tmp_path} is in use by another process \(pid {holder.pid}"):
            with locked(tmp_path, wait=False, name="run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locked(tmp_path, wait=False, name="run"):  # the kernel dropped the killed holder's lock
        pass


def test_stale_temporaries_are_removed_by_the_next_writer(tmp_path):
    path = tmp_path / "rows.json"
    stale = tmp_path / ".rows.json.ab12_xYz.tmp"  # what a SIGKILL mid-write leaves
    other = tmp_path / ".rows.json.old.json.ab12_xYz.tmp"  # another file's temporary: not ours
    stale.write_text("[")
    other.write_text("[")
    upsert_row(path, {"a": 1}, ("a",))
    assert not stale.exists() and other.exists()
    assert remove_stale_temporaries(path) == []


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=rf"cannot write {path}: no space left on the disk holding {tmp_path}") as err:
        atomic_write(path, full)
    assert err.value.errno == errno.ENOSPC and "the previous file is kept" in str(err.value)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_update_json_reads_bare_nan_and_writes_strict_json(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('[{"a": 1, "t": NaN}]')  # what memorisation wrote before results were strict
    upsert_row(path, {"a": 2, "t": float("inf")}, ("a",))
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == [
        {"a": 1, "t": None},
        {"a": 2, "t": None},
    ]
    assert update_json(tmp_path / "new.json", lambda d: {**d, "n": 1}, {}) == {"n": 1}
    write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": None}


@pytest.mark.parametrize(
    "content, holds, pattern",
    [
        ('{"a": 1}', "list", r"out=.*holds a JSON object, not a list of rows"),
        ("[{", "list", r"out=.*cannot be merged into: it is not a readable JSON file"),
        ("[]", "rows", r"out=.*is not a table of this command \(an object with a 'rows' list\)"),
    ],
)
def test_an_output_that_cannot_be_merged_into_is_refused(tmp_path, content, holds, pattern):
    path = tmp_path / "rows.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        check_output_file(path, "out", holds)
    assert check_output_file(tmp_path / "new" / "rows.json", "out", holds).parent.is_dir()  # made before the work


def test_a_new_run_removes_a_killed_snapshots_temporary(tmp_path):
    from empirical.training.train import _remove_stale_temporaries

    (tmp_path / "snapshots").mkdir()
    stale = [tmp_path / "snapshots" / ".step100.pt.x1y2z3ab.tmp", tmp_path / ".checkpoint.pt.q9w8e7r6.tmp"]
    kept = tmp_path / "snapshots" / "step100.pt"
    for path in [*stale, kept]:
        path.write_bytes(b"x")
    _remove_stale_temporaries(tmp_path)
    assert not any(p.exists() for p in stale) and kept.exists()
