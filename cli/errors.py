"""What every command shares: help options, and one wrapper that turns the project's named errors into
one-line messages while real bugs still show their traceback.

    @main.command(context_settings=CONTEXT)
    @user_errors
    def info_command(store): ...

Exit codes (every command): 0 done; 1 an error (one line naming the file and what is wrong); 2 a usage
error (click's: an unknown option, a value of the wrong type or out of range; and ours: ConfigError, an
option or combination of options that cannot work); 130 interrupted by Ctrl-C.

Under torchrun every process runs the command, and each would print the same line: there the first
process to fail says it and the others exit with the same code in silence (`first_to_say`).
"""

from __future__ import annotations

import functools
import os
import sys
from functools import wraps
from pathlib import Path

import click

from ntu_pipeline.errors import ConfigError, Interrupted, NTUPrepError
from ntu_pipeline.stages.interrupt import MESSAGE as INTERRUPTED
from ntu_pipeline.stages.interrupt import quiet_shutdown

_as_program = False  # set by Program: this process is the command itself, not a test calling it

CONTEXT = {"max_content_width": 110, "help_option_names": ["-h", "--help"]}


@functools.cache
def first_to_say() -> bool:
    """Whether this process prints its error: yes outside torchrun; under torchrun (RANK set) only the
    first of the processes on this machine to ask, which creates a file in the folder torchrun made for
    this attempt (the one holding every process's TORCHELASTIC_ERROR_FILE); every process where torchrun
    made none (`--log-dir /dev/null`). Asked once an error happened, so "first" is the first to fail."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if "RANK" not in os.environ or not error_file:
        return True
    try:
        os.close(os.open(Path(error_file).parent.parent / "ntu-error-said", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def _once(err: click.ClickException) -> click.ClickException | click.exceptions.Exit:
    """`err`, or for a process that is not the first to say it (`first_to_say`) its exit code alone."""
    return err if first_to_say() else click.exceptions.Exit(err.exit_code)


class Program(click.Group):
    """The group of a console script (`@click.group(cls=Program)`). Run as a program, each command ends
    with `quiet_shutdown()`: a Ctrl-C while the interpreter exits is not a traceback. click's test
    runner calls `main`, not this, so a test process keeps Python's own Ctrl-C."""

    def __call__(self, *args, **kwargs):
        global _as_program
        _as_program = True
        return super().__call__(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as err:  # click's usage errors too: said once under torchrun
            if first_to_say():
                raise
            raise click.exceptions.Exit(err.exit_code) from None


class OptionsError(click.ClickException):
    """Options that cannot work: one line, as every error of ours, with click's usage exit code."""

    exit_code = 2


def user_errors(fn):
    """NTUPrepError (every error the project raises on purpose) and OSError (a file the system refused)
    become `Error: <one line>`, exit 1 (2 for a ConfigError: options that cannot work are usage errors);
    Ctrl-C exits 130 with one line; a closed pipe (`| head`) ends
    quietly (click's own handling); anything else is a bug and keeps its traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            finally:
                if _as_program:  # the work is done and said: the exit that follows is not interrupted
                    quiet_shutdown()  # (a Ctrl-C landing before this is still caught below)
        except (Interrupted, KeyboardInterrupt) as err:
            if first_to_say():
                click.echo(str(err) if isinstance(err, Interrupted) else INTERRUPTED, err=True)
            sys.exit(130)
        except BrokenPipeError:
            raise  # click exits quietly on EPIPE
        except ConfigError as err:
            raise _once(OptionsError(str(err))) from err
        except NTUPrepError as err:
            raise _once(click.ClickException(str(err))) from err
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise _once(click.ClickException(f"{where}{err.strerror or err}")) from err
    return wrapper
