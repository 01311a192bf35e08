"""A writer SIGKILLed at random moments while rewriting a run's files leaves every file under
the runs folder readable, and no temporary file that a reader lists."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from core import run_store

KILLS = 20

# Rewrites metrics, eval and status over and over through RunWriter, as training does at every
# flush; the files grow to a few MB so that a kill often lands inside a write.
WRITER = """
import sys
from core import run_store
writer = run_store.RunWriter(sys.argv[1])
writer.write_config({"name": "victim"})
step = 0
while True:
    for _ in range(2000):
        step += 1
        writer.log_metrics(step, step / 100, step * 0.01, {"loss": 1.0 / step, "lr": 1e-3, "grad_norm": 2.0})
    writer.log_eval(step, step / 100, "val", {"i2t_R@1": 0.5, "t2i_R@1": 0.4})
    writer.flush()
    writer.heartbeat(step)
    print("flushed", flush=True)
"""


def _unreadable(root: Path) -> list[str]:
    bad = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            if path.suffix == ".parquet":
                pq.read_table(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as e:  # noqa: BLE001 - any failure to read counts
            bad.append(f"{path.name}: {e.__class__.__name__}")
    return bad


def _wait_for_temporary_file(run: Path, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name.endswith(f".{pid}.tmp") for name in os.listdir(run)):
            return


def test_sigkill_at_random_moments_never_leaves_a_damaged_file(tmp_path):
    runs = tmp_path / "runs"
    run = run_store.run_dir(runs, "sweep", "victim")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(5)
    unreadable, leftovers, mid_write, kills = [], set(), 0, 0
    # Half the kills land at random moments; the other half as soon as the writer's temporary
    # file appears, so that some surely land inside a write (a write is a few milliseconds of
    # each flush, and random moments alone can all miss it).
    while kills < KILLS or (mid_write == 0 and kills < 3 * KILLS):
        kills += 1
        proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "flushed"  # started and writing, not still importing
        if kills % 2:
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            _wait_for_temporary_file(run, proc.pid, timeout=2.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        temps = {p.name for p in run.iterdir() if p.name.startswith(".")}
        mid_write += any(t.endswith(f".{proc.pid}.tmp") for t in temps)
        leftovers |= temps
        unreadable += _unreadable(runs)
        listed = run_store.list_runs(runs)
        assert [r.key for r in listed] == ["sweep/victim"]
        assert listed[0].problems == [] and listed[0].state == run_store.INTERRUPTED
    print(f"\n{kills} SIGKILLs ({mid_write} inside a write, leaving {len(leftovers)} dot-named temporary files): "
          f"unreadable files = {len(unreadable)}")
    assert unreadable == []
    assert mid_write > 0  # the test did kill writes in progress
    assert len(run_store.read_metrics(run)) > 0
    run_store.RunWriter(run)  # the next writer of the run clears what killed writes left
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
