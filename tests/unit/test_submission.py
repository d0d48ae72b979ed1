"""What a submission sends and shows, prepared on the client (jobs/submission.py, no Ray, no network): the job's
flags read from its config without the training stack, local paths made absolute, Ray's own lines left out of a
job's log."""

from __future__ import annotations

from jobs import submit


def test_job_configs_load_without_the_training_stack():
    # submit reads a job's flags from its config class (the definitions its main() parses with), so the job
    # modules must import without torch, torchvision or nncf: a client with the base install submits training
    import subprocess
    import sys

    # ... nor Ray or OpenVINO: --help and flag errors answer before any of them loads (issue 28: under 1 s)
    code = ("import sys, jobs.train, jobs.train_tiles, jobs.quantize, jobs.demo, jobs.import_model, jobs.score, "
            "jobs.report, jobs.synth, jobs.submit, jobs.runs; "
            "print(sorted(m for m in ('torch', 'torchvision', 'nncf', 'ray', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    assert {"backbone", "epochs", "train_precision", "precision", "model"} <= submit.job_fields("jobs.train")


def test_local_paths_are_made_absolute_and_missing_inputs_refused(tmp_path):
    from jobs.submission import absolute_paths

    (tmp_path / "arch").mkdir()
    args, problems = absolute_paths(("--archive", "arch", "--model", "s3://b/m", "--out=scores", "--chunk-size", "4",
                                     "--metadata", "file://arch"), str(tmp_path))
    assert args == ("--archive", str(tmp_path / "arch"), "--model", "s3://b/m", f"--out={tmp_path / 'scores'}",
                    "--chunk-size", "4", "--metadata", str(tmp_path / "arch"))
    assert problems == []
    _, problems = absolute_paths(("--archive", "nope", "--out", "new"), str(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("--archive nope: not found on this client")
    # several values after one flag (report --results a b)
    (tmp_path / "b").mkdir()
    args, _ = absolute_paths(("--results", "arch", "b", "--top", "5"), str(tmp_path))
    assert args == ("--results", str(tmp_path / "arch"), str(tmp_path / "b"), "--top", "5")


def test_rays_own_lines_are_left_out_of_a_jobs_log(monkeypatch):
    log = ("2026-12-07 15:01:47,482\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
           "Running entrypoint for job synth-1: python -m jobs.synth --out /x\n"
           "synth: 8 images of 2 patients\n"
           "2026-12-07 15:01:48,001\tWARNING worker.py:12 -- something the user should see\n"
           "[score] 8/8 images (100.0%)\n")
    assert submit.job_log_lines(log) == ("synth: 8 images of 2 patients\n"
                                         "2026-12-07 15:01:48,001\tWARNING worker.py:12 -- something the user should "
                                         "see\n[score] 8/8 images (100.0%)\n")
    monkeypatch.setenv("TILESCOPE_VERBOSE", "1")
    assert submit.job_log_lines(log) == log


def test_follow_joins_chunks_split_mid_line(capsys):
    import io

    class Tail:
        async def tail_job_logs(self, submission_id):
            for chunk in ("synth: 8 ima", "ges\n2026-12-07 15:01:47,482\tINFO job_manager.py:5", "81 -- setting up\n",
                          "done"):
                yield chunk

        def get_job_status(self, submission_id):
            return "SUCCEEDED"

    out = io.StringIO()
    assert submit.follow_logs(Tail(), "s", out) == "SUCCEEDED"
    assert out.getvalue() == "synth: 8 images\ndone"
