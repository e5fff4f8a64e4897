"""Under torchrun an error is one line: said by the first process that has it (cli/errors.py), and
`python -m cli.torchrun` ends the run with that process's exit code instead of torchrun's traceback.

The first tests run small commands of their own (no torch in the processes: a few seconds each); the
last one interrupts a real `ntu-train fit` of two gloo processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# Every process runs this: a command of ours raising a TrainingError ("every"), a click usage error
# ("--count x"), a TrainingError in rank 1 alone while rank 0 waits ("rank1"), or rank 1 killed ("kill").
COMMAND = textwrap.dedent("""
    import os, signal, sys, time
    import click
    from cli.errors import Program, user_errors
    from ntu_pipeline.errors import TrainingError

    RANK = int(os.environ["RANK"])

    @click.group(cls=Program)
    def main():
        pass

    @main.command()
    @click.argument("how")
    @click.option("--count", type=int, default=0)
    @user_errors
    def fail(how, count):
        if how == "every":
            raise TrainingError("the loss became nan in epoch 1 by step 10")
        if RANK == 1:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise TrainingError("rank 1 could not read its share")
        time.sleep(60)  # rank 0: torchrun stops it once rank 1 has failed

    main(sys.argv[1:])
""")


def torchrun(script: Path, *args: str, launcher: str = "cli.torchrun") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", launcher, "--standalone", "--nproc-per-node", "2",
                           str(script), *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def command(tmp_path_factory) -> Path:
    script = tmp_path_factory.mktemp("ddp_errors") / "command.py"
    script.write_text(COMMAND)
    return script


def lines_of(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("args, code, message", [
    (["fail", "every"], 1, "Error: the loss became nan in epoch 1 by step 10"),
    (["fail", "every", "--count", "x"], 2, "Error: Invalid value for '--count': 'x' is not a valid integer."),
    (["fail", "rank1"], 1, "Error: rank 1 could not read its share"),
])
def test_an_error_is_one_line_and_the_exit_code_of_the_process(command, args, code, message):
    """The same error in both processes (ours, and click's usage error with its usage lines), and an
    error in rank 1 alone: its line once, nothing from torchrun, the process's exit code. Catches
    every process printing its line (two before), a rank-0-only rule that loses rank 1's own error, and
    torchrun's ChildFailedError traceback."""
    run = torchrun(command, *args)
    lines = lines_of(run)
    assert [line for line in lines if line.startswith("Error")] == [message], lines
    assert not any("Traceback" in line or "torch.distributed" in line for line in lines), lines
    assert run.returncode == code, lines


def test_plain_torchrun_says_the_error_once_too(command):
    """The processes say it once under torchrun itself (which still adds its own traceback)."""
    run = torchrun(command, "fail", "every", launcher="torch.distributed.run")
    errors = [line for line in lines_of(run) if line.startswith("Error")]
    assert errors == ["Error: the loss became nan in epoch 1 by step 10"], lines_of(run)
    assert run.returncode == 1


def test_a_process_killed_by_a_signal_gets_one_line(command):
    """A process that cannot say anything (SIGKILL, as the OOM killer sends): one line naming it."""
    run = torchrun(command, "fail", "kill")
    lines = lines_of(run)
    assert len(lines) == 1 and lines[0].startswith("Error: process 1 (pid "), lines
    assert lines[0].endswith("was killed by SIGKILL"), lines
    assert run.returncode == 128 + signal.SIGKILL


@pytest.mark.slow
def test_ctrl_c_under_torchrun_is_one_line(tmp_path_factory):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a two-process fit:
    exit 130 and the fit's one line, once. Catches each process printing it and torchrun's
    SignalException traceback with its shutdown warnings (both before)."""
    from training import build_store

    root = tmp_path_factory.mktemp("ddp_ctrl_c")
    store = build_store(root)
    command = [sys.executable, "-m", "cli.torchrun", "--standalone", "--nproc-per-node", "2", "-m",
               "cli.train", "fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out",
               str(root / "run"),
               "--epochs", "100", "--batch-size", "8", "--frames", "16", "--device", "cpu", "--workers", "0",
               "--quiet"]
    run = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    seen = []
    for line in run.stdout:  # rank 0's lines; the first epoch's ends once both train
        seen.append(line.rstrip())
        if line.startswith("epoch 1/"):
            break
    time.sleep(1)
    os.killpg(run.pid, signal.SIGINT)
    rest, _ = run.communicate(timeout=60)
    lines = seen + [line for line in rest.splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("recipe", "loading", "epoch "))]
    assert len(said) == 1 and said[0].startswith("interrupted; "), lines
    assert run.returncode == 130, lines
