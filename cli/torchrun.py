"""torchrun that ends in one line: `python -m cli.torchrun` takes torchrun's arguments, unchanged.

    python -m cli.torchrun --nproc-per-node 8 -m cli.train fit --store ntu60.zarr --protocol xsub ...

torchrun itself ends every failed run with a traceback (ChildFailedError and a table of exit codes) and a
Ctrl-C with another (SignalException), under the line the processes already printed (cli/errors.py: the
first process to fail says why, once). Here instead:
- a process that ended with an exit code said why: the run exits with that code, nothing added;
- a process killed by a signal said nothing (the OOM killer, a segfault): one line naming its rank and
  the signal, exit 128 + the signal;
- Ctrl-C (or SIGTERM) to torchrun, which passes it on to the processes: exit 130 (143), nothing added.
torchrun's warnings while it shuts the processes down are not shown; anything else (a rendezvous that
fails, an option torchrun does not know) is torchrun's to say, traceback and all.
"""

from __future__ import annotations

import logging
import sys

# the torchrun loggers that narrate the shutdown ("Received 2 death signal", "Sending process ... closing
# signal", "failed (exitcode: 1) local_rank: 0"), what the processes and this module already said
SHUTDOWN_LOGGERS = ("torch.distributed.elastic.agent.server.api",
                    "torch.distributed.elastic.multiprocessing.api")


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with `argv` (sys.argv[1:] by default); returns the exit status."""
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in SHUTDOWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run.main(argv)
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode
        print(f"Error: process {rank} (pid {failure.pid}) was killed by {failure.signal_name()}",
              file=sys.stderr)
        return 128 - failure.exitcode
    except KeyboardInterrupt:  # before torchrun watches for signals: no process started yet
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
