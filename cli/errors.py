"""What every command shares: help options, and one wrapper that turns the project's named errors into
one-line messages while real bugs still show their traceback.

    @main.command(context_settings=CONTEXT)
    @user_errors
    def info_command(store): ...

Exit codes (every command): 0 done; 1 an error (one line naming the file and what is wrong); 2 a usage
error (click's: an unknown option, a bad value); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import sys
from functools import wraps

import click

from ntu_pipeline.errors import Interrupted, NTUPrepError
from ntu_pipeline.stages.interrupt import MESSAGE as INTERRUPTED

CONTEXT = {"max_content_width": 110, "help_option_names": ["-h", "--help"]}


def user_errors(fn):
    """NTUPrepError (every error the project raises on purpose) and OSError (a file the system refused)
    become `Error: <one line>` and exit 1; Ctrl-C exits 130 with one line; a closed pipe (`| head`) ends
    quietly (click's own handling); anything else is a bug and keeps its traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Interrupted, KeyboardInterrupt) as err:
            click.echo(str(err) if isinstance(err, Interrupted) else INTERRUPTED, err=True)
            sys.exit(130)
        except BrokenPipeError:
            raise  # click exits quietly on EPIPE
        except NTUPrepError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from err
    return wrapper
