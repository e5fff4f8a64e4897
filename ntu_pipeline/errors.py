"""Every exception the pipeline raises on purpose, in one place.

Each carries the file (or sample) it is about, and where it can, the line or frame, what was
expected and what was found, so that a failure recorded in a store's failure table explains itself.
"""

from __future__ import annotations


class NTUPrepError(Exception):
    """Base class of the pipeline's own errors.

    Raised in a torch DataLoader worker, an error reaches the main process rebuilt from its message and
    the worker's whole traceback ("Caught X in DataLoader worker process 0. Original Traceback ...");
    an error of ours built from one such message keeps its own last line only, so a damaged shard met
    in a worker is still one line at the command line."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self).__name__),)
        super().__init__(*args)


def _worker_message(message: str, name: str) -> str:
    """The original one-line message inside torch's re-raised worker message; `message` otherwise."""
    if not (message.startswith(f"Caught {name} ") and "\nOriginal Traceback" in message):
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]  # "ntu_pipeline.errors.Name: the original message"
    _, found, original = last.partition(f"{name}: ")
    return original if found else message


class SkeletonFormatError(NTUPrepError, ValueError):
    """A `.skeleton` file that does not follow the NTU RGB+D text format."""

    def __init__(self, path: str, line: int | None, expected: str, found: str):
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.found = found
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: expected {expected}, found {found}")


class SampleNameError(NTUPrepError, ValueError):
    """A file name that is not an NTU sample name (SsssCcccPpppRrrrAaaa)."""

    def __init__(self, name: str, reason: str = "not of the form SsssCcccPpppRrrrAaaa"):
        self.name = name
        super().__init__(f"{name!r}: {reason}")


class VideoDecodeError(NTUPrepError):
    """An `_rgb.avi` that PyAV cannot decode as expected (raised with the sample name attached)."""

    def __init__(self, path: str, frame: int | None, reason: str):
        self.path = str(path)
        self.frame = frame
        where = f"{self.path} frame {frame}" if frame is not None else self.path
        super().__init__(f"{where}: {reason}")


class ConfigError(NTUPrepError, ValueError):
    """An option or a combination of options that cannot work (raised when a config is built)."""


class StoreFormatError(NTUPrepError):
    """A store whose format version or layout this version of the package does not know."""


class DamagedStoreError(StoreFormatError):
    """A store file missing, of another size than its shard recorded, or that does not decode: found
    before reading (`store.files.check_shard_files`) or while reading (`store.frame_reader`). The message
    names the store, the file, what is wrong and the fix (`ntu-prep verify`, then the same extract)."""


class IncompleteStoreError(NTUPrepError):
    """A store whose stage (or whole extraction) has not finished: some rows are still pending."""


class StoreWriteError(NTUPrepError):
    """The operating system refused a write into the store (the message names the file)."""


class LockedError(NTUPrepError):
    """Another process holds a folder's write lock (a store, a run directory)."""


class StoreLockedError(LockedError):
    """Another process holds the store's lock: a writer (refused to readers and writers), or readers
    (refused to a writer; `store.lock.hold_store_for_reading`)."""


class LeaseLostError(NTUPrepError):
    """A worker's writer is gone (its lock was released or taken by another): it must not write."""


class Interrupted(NTUPrepError):
    """The user pressed Ctrl-C; what was written so far is resumable."""


class TrainingError(NTUPrepError):
    """A run that cannot start or go on (the message says why and what to do)."""


class RunLockedError(LockedError, TrainingError):
    """Another `ntu-train fit` is writing the same run directory."""


class CheckpointError(TrainingError, ValueError):
    """A checkpoint that is not ours, is damaged, or does not fit the model or store it is used with."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """The training loss became NaN or infinite."""


class ScoresError(TrainingError, ValueError):
    """A scores file (`scores.npz`) that is missing, malformed, or does not go with another one (an
    ensemble's sources): the message names the file and what is wrong (`model.results.scores`)."""
