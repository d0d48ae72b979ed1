"""What a job prints: tilescope's own lines (stage, progress, summary) and the warnings a user must act on.

Quiet is the default. Each third-party line that carries nothing to act on is turned off where it starts, by
warning category and module or by logger (and message where a logger also says things that matter):

- torch.jit's FutureWarnings (`torch.jit.trace` is deprecated), raised inside OpenVINO's PyTorch export;
- torch's "No CUDA runtime is found, using CUDA_HOME=..." (a CPU job on a host with an `nvcc`);
- NNCF's progress bars (rich, on its global console), its per-layer "Rollback to ...MINMAX" notes and its INFO lines
  (its torch extension being compiled, each step of accuracy control);
- Ray Data's UserWarning that a pool has fewer input blocks than actors (it counts shards, not the chunks
  each shard's read emits);
- Ray's INFO lines ("Started a local Ray instance"), its note that token authentication is on, and Ray Data's
  INFO lines and its note that its progress bars are off (scoring prints its own progress line). Ray Data
  still writes all of them to its log files in the Ray session directory;
- the driver's error-level line from Ray's core worker about Ray Data's own pool actors ("constructor arguments
  in the object store and max_restarts > 0", ray-project/ray#57733): Ray Data passes its context and transform
  to every pool actor as object refs that the driver holds for the life of the dataset, so nothing can be
  lost; only that line, and only for Ray Data's MapWorker actors, is dropped from the driver's stderr.

The same settings run in every Ray worker of the job (connect_ray() names quiet_process as Ray's worker
setup hook), so actors are quiet too. Without a terminal no colour codes are written (NO_COLOR, and Ray's
coloured worker prefixes off). `--verbose` (or TILESCOPE_VERBOSE=1) turns all of this off and shows everything.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import logging
import os
import select
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

VERBOSE_ENV = "TILESCOPE_VERBOSE"
WORKER_SETUP_HOOK = "cli.console.quiet_process"
"""Ray's worker_process_setup_hook: every worker of a job that connect_ray() started runs quiet_process()."""

_state: dict = {"quiet_driver": False, "restore_stderr": None}


def quiet_job_client() -> None:
    """The cluster commands' client (submit, status, logs, stop, list): Ray's job client logs each upload, and its
    runtime-env packaging warns about what it leaves out of the working_dir (tilescope excludes those itself);
    none of it is the user's business unless verbose. Ray's modules set their own loggers' levels when imported,
    so they are imported first and every Ray logger is then raised to ERROR."""
    if verbose():
        return
    import ray.job_submission  # noqa: F401  (imports the SDK and runtime-env modules, which set their levels)

    for name, item in list(logging.Logger.manager.loggerDict.items()):
        if (name == "ray" or name.startswith("ray.")) and isinstance(item, logging.Logger):
            item.setLevel(logging.ERROR)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet() -> bool:
    """True inside job_console() without --verbose: a job run from the command line."""
    return bool(_state["quiet_driver"])


@contextmanager
def job_console(verbose_flag: bool, stream: TextIO | None = None) -> Iterator[None]:
    """The console of a job run from the command line (job_main): no colour codes without a terminal, and
    unless verbose, the third-party lines listed above off in this process and (via connect_ray) its workers.
    On exit the environment and stderr are as they were (tests run several jobs in one process)."""
    saved = {name: os.environ.get(name) for name in (VERBOSE_ENV, "NO_COLOR", "RAY_COLOR_PREFIX")}
    if not _isatty(stream if stream is not None else sys.stdout):
        os.environ.setdefault("NO_COLOR", "1")  # rich and most command-line tools honour it
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # Ray's "(Actor pid=...)" prefixes without ANSI codes
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    if not verbose():
        quiet_process()
        _state["quiet_driver"] = True
    try:
        yield
    finally:
        _state["quiet_driver"] = False
        restore, _state["restore_stderr"] = _state["restore_stderr"], None
        if restore is not None:
            restore()
        if _ray_running():  # Ray prints its workers' last lines until it shuts down, at exit: still no colour
            saved = {VERBOSE_ENV: saved[VERBOSE_ENV]}
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def quiet_process() -> None:
    """Turn off the third-party lines listed in the module docstring in this process (idempotent)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._trace")
    # Ray Data plans one input block per shard, so a one-shard archive warns that the pool cannot be used in
    # full; each shard's read emits many chunks, and the pool is (jobs/score.py).
    warnings.filterwarnings("ignore", message=r"The (minimum|maximum) number of concurrent (actors|tasks) for ",
                            category=UserWarning, module=r"ray\.data\._internal\.execution\.operators\.")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    logging.getLogger("ray._private.worker").setLevel(logging.WARNING)
    _drop_records("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")
    _hide_ray_data_console_info()
    # NNCF's logger has its own class, so it must not be created before NNCF creates it; rich (NNCF's progress
    # bars) is not imported by processes that never quantize. Both are set when they are first imported.
    after_import("nncf.common.logging.logger", _quiet_nncf)
    after_import("rich.console", _quiet_rich)


def _quiet_nncf() -> None:
    # Its per-layer "Rollback to ...MINMAX" warning, and its INFO lines (compiling its torch extension, each step of
    # accuracy control): quantize prints its own stage and recipe lines. Its warnings and errors stay.
    _drop_records("nncf", "Rollback to RangeEstimatorParametersSet.MINMAX")
    logging.getLogger("nncf").setLevel(logging.WARNING)


def _quiet_rich() -> None:
    import rich

    rich.reconfigure(quiet=True)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `callback` right after module `name` has been executed (the first time it is imported)."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # found by the finders there would have been without this one
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module, callback = spec.loader.exec_module, self.callback

        def exec_then_callback(module: object) -> None:
            exec_module(module)
            callback()

        spec.loader.exec_module = exec_then_callback  # type: ignore[method-assign]  # this module's own loader
        return spec


def after_import(name: str, callback: Callable[[], None]) -> None:
    """`callback()` now if module `name` is imported already, else right after its first import."""
    if name in sys.modules:
        callback()
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


def quiet_driver_after_ray_start() -> None:
    """Drop Ray's core-worker line about Ray Data's pool actors from this driver's stderr (connect_ray calls
    this once Ray's own processes run, so none of them inherits the filtered stderr)."""
    if _state["quiet_driver"] and _state["restore_stderr"] is None:
        _state["restore_stderr"] = filter_fd_lines(2, is_ray_data_actor_args_line)


def is_ray_data_actor_args_line(line: bytes) -> bool:
    return (b"core_worker.cc" in line and b"MapWorker(" in line
            and b"has constructor arguments in the object store and max_restarts > 0" in line)


# Ray Data lines that say what tilescope's own line says: the progress-bar notice, and the two ERROR lines of a
# failed task, which the job restates as `<job>: error: <cause>` (a bug keeps its traceback); Ray Data's log
# file still holds them.
RESTATED_RAY_DATA_LINES = ("Progress bars disabled", "An exception was raised from a task of operator",
                           "Exception occurred in user code")


class _HiddenFromConsole(logging.LogRecord):
    """A record Ray Data's console handler skips (its HiddenRecordFilter drops records whose `hide` is true)
    while its file handlers keep it. A class attribute, so a caller's extra={"hide": ...} still overrides it."""

    hide = True


def _hide_ray_data_console_info() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "tilescope_quiet", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith("ray.data") and type(record) is logging.LogRecord and (
                record.levelno < logging.WARNING
                or (isinstance(record.msg, str) and record.msg.startswith(RESTATED_RAY_DATA_LINES))):
            record.__class__ = _HiddenFromConsole
        return record

    factory.tilescope_quiet = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefix))


def _drop_records(logger: str, prefix: str) -> None:
    target = logging.getLogger(logger)
    if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in target.filters):
        target.addFilter(_DropPrefix(prefix))


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def filter_fd_lines(fd: int, drop: Callable[[bytes], bool]) -> Callable[[], None] | None:
    """Route what this process writes to `fd` through a pipe and copy it to where it went before, minus the
    lines `drop` matches. Returns the function that undoes it (also run at exit), or None when `fd` cannot be
    redirected. Processes started later inherit the pipe: call this after starting them."""
    try:
        sys.stderr.flush()
        original = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
    except OSError:
        return None
    thread = threading.Thread(target=_pump, args=(read_end, original, drop), daemon=True,
                              name=f"tilescope-fd{fd}-filter")
    thread.start()

    def restore() -> None:
        atexit.unregister(restore)
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, fd)  # the pipe's last write end closes: the pump reads EOF and ends
        thread.join(timeout=2.0)
        os.close(original)

    atexit.register(restore)
    return restore


def _pump(read_end: int, out: int, drop: Callable[[bytes], bool]) -> None:
    pending = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], 0.2)
        if not ready:
            # A partial line (a prompt, a carriage-return progress) is passed on after a pause; a line to drop
            # is written whole by its logger, so it never sits here half-written.
            if pending:
                _write_all(out, pending)
                pending = b""
            continue
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not drop(line))
        if kept:
            _write_all(out, kept)
    if pending and not drop(pending):
        _write_all(out, pending)
    os.close(read_end)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return
