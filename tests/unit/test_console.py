"""cli/console.py: each filter is narrow (by category and module, logger and message), the stderr line filter
keeps everything else in order, and job_console() leaves the process as it found it."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from cli import console

# The line Ray 2.60's core worker writes to the driver's stderr for every Ray Data pool actor.
E_LINE = (b"[2026-11-30 19:37:52,278 E 16820 16820] core_worker.cc:2465: Actor with class name: "
          b"'MapWorker(MapBatches(decode_chunk)->MapBatches(Int8Scorer))' and ID: 'fb6b2a99d99dc829cc70c8de01000000' "
          b"has constructor arguments in the object store and max_restarts > 0. If the arguments in the object store "
          b"go out of scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/"
          b"53727 for more details.")


def test_only_ray_datas_actor_argument_line_is_recognised():
    assert console.is_ray_data_actor_args_line(E_LINE)
    assert not console.is_ray_data_actor_args_line(E_LINE.replace(b"MapWorker(", b"TileTrainer("))  # ours: shown
    assert not console.is_ray_data_actor_args_line(b"[... E 1 1] core_worker.cc:99: Worker died unexpectedly")
    assert not console.is_ray_data_actor_args_line(b"[score] 40/80 images (50.0%)")


def test_fd_filter_drops_only_matching_lines_and_keeps_order(tmp_path):
    path = tmp_path / "stderr.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        restore = console.filter_fd_lines(fd, lambda line: line.startswith(b"drop"))
        assert restore is not None
        os.write(fd, b"one\ndrop me\ntw")
        os.write(fd, b"o\n" + E_LINE + b"\n")
        os.write(fd, b"drop this too\nthree, no newline")
        restore()
        os.write(fd, b"\ndrop after restore\n")  # written straight to the file again
    finally:
        os.close(fd)
    assert path.read_bytes() == b"one\ntwo\n" + E_LINE + b"\nthree, no newline\ndrop after restore\n"


def test_ray_data_info_is_hidden_from_its_console_only():
    console._hide_ray_data_console_info()
    console._hide_ray_data_console_info()  # idempotent: one factory, not two

    def record(name: str, level: int, msg: str, **extra):
        return logging.getLogger(name).makeRecord(name, level, "f.py", 1, msg, (), None, extra=extra or None)

    executor = "ray.data._internal.execution.streaming_executor"
    assert getattr(record(executor, logging.INFO, "Starting execution of Dataset"), "hide", False) is True
    assert getattr(record("ray.data._internal.progress", logging.WARNING,
                          "Progress bars disabled. To enable, set ..."), "hide", False) is True
    # Warnings and errors a user must act on stay, as does everything from other loggers.
    assert getattr(record(executor, logging.WARNING, "Operator is backpressured"), "hide", False) is False
    assert getattr(record(executor, logging.ERROR, "Full stack trace:"), "hide", False) is False
    assert getattr(record("ray.data", logging.ERROR, "x", hide=True), "hide", False) is True  # Ray Data's own
    assert getattr(record(executor, logging.INFO, "x", hide=False), "hide", True) is False  # an explicit extra wins
    assert getattr(record("jobs.score", logging.INFO, "run complete"), "hide", False) is False


def test_quiet_process_filters_warnings_by_category_and_module():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_process()
        warnings.warn_explicit("`torch.jit.trace` is deprecated.", FutureWarning, "_trace.py", 1006,
                               module="torch.jit._trace")
        warnings.warn_explicit("a FutureWarning from elsewhere", FutureWarning, "x.py", 1, module="torch.nn.x")
        warnings.warn_explicit("a UserWarning from the tracer", UserWarning, "_trace.py", 1, module="torch.jit._trace")
        pool = "ray.data._internal.execution.operators.actor_pool_map_operator"
        warnings.warn_explicit("The minimum number of concurrent actors for 'MapBatches(Int8Scorer)' is set to 2, "
                               "but the operator only received 1 input(s).", UserWarning, "a.py", 551, module=pool)
        warnings.warn_explicit("Another UserWarning of the pool", UserWarning, "a.py", 9, module=pool)
    assert [str(w.message) for w in caught] == ["a FutureWarning from elsewhere", "a UserWarning from the tracer",
                                                "Another UserWarning of the pool"]
    from nncf.common.logging import logger as nncf_logging  # imported after quiet_process, as in a job

    nncf = nncf_logging.nncf_logger
    assert isinstance(nncf, nncf_logging.NNCFLogger)  # NNCF's own logger class, not one made early by the filter
    assert not nncf.filter(nncf.makeRecord("nncf", logging.WARNING, "f.py", 1, "Rollback to "
                                           "RangeEstimatorParametersSet.MINMAX for the target point: '4'", (), None))
    assert nncf.filter(nncf.makeRecord("nncf", logging.WARNING, "f.py", 1, "Dataset contains only 3 samples", (),
                                       None))


def test_after_import_runs_once_the_module_has_run(tmp_path, monkeypatch):
    (tmp_path / "tilescope_probe_mod.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []
    console.after_import("tilescope_probe_mod", lambda: seen.append(sys.modules["tilescope_probe_mod"].VALUE))
    assert seen == []
    import tilescope_probe_mod  # noqa: F401

    assert seen == [42]
    assert not any(getattr(f, "name", None) == "tilescope_probe_mod" for f in sys.meta_path)  # gone once used
    console.after_import("tilescope_probe_mod", lambda: seen.append(0))  # imported already: at once
    assert seen == [42, 0]
    del sys.modules["tilescope_probe_mod"]
    assert logging.getLogger("torch.utils.cpp_extension").getEffectiveLevel() == logging.ERROR
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    keep = token.makeRecord(token.name, logging.WARNING, "f.py", 1, "Token authentication is disabled for this "
                            "Ray cluster. Anyone with network access ...", (), None)
    drop = token.makeRecord(token.name, logging.WARNING, "f.py", 1, "Token authentication is enabled for this Ray "
                            "cluster. Set RAY_AUTH_MODE=disabled to opt out.", (), None)
    assert token.filter(keep) and not token.filter(drop)


def test_job_console_restores_the_environment_and_its_state(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    assert not console.quiet()
    with console.job_console(verbose_flag=False):  # pytest's stdout is not a terminal
        assert console.quiet() and not console.verbose()
        assert os.environ["NO_COLOR"] == "1"
        assert os.environ["RAY_COLOR_PREFIX"] == "1"  # set by the user: kept
    assert not console.quiet() and "NO_COLOR" not in os.environ and os.environ["RAY_COLOR_PREFIX"] == "1"
    with console.job_console(verbose_flag=True):
        assert console.verbose() and not console.quiet()
    assert not console.verbose()
    console.quiet_driver_after_ray_start()  # outside a quiet job: stderr is left alone
    assert console._state["restore_stderr"] is None
