"""tilescope submit / status / logs / stop / list against a fake Job Submission client (no Ray, no network)."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field

import pytest

import jobs.__main__ as dispatcher
from cli import provenance
from jobs import runs, submit
from jobs.submit import SubmitConfig
from tests.conftest import REPO

ADDRESS = "http://127.0.0.1:8265"
SCORE_ARGS = ("--archive", "s3://b/nih", "--model", "s3://b/model", "--out", "s3://b/scores")


@dataclass
class FakeJob:
    submission_id: str
    status: str
    entrypoint: str
    metadata: dict
    message: str = ""
    start_time: int = 0
    end_time: int | None = None


@dataclass
class FakeClient:
    """The part of ray.job_submission.JobSubmissionClient that tilescope uses, over a dict of jobs."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    submitted: list[dict] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    def get_job_logs(self, submission_id):
        return self.logs.get(submission_id, "")

    def list_jobs(self):
        return list(self.jobs.values())

    def submit_job(self, **kwargs):
        assert kwargs["submission_id"] not in self.jobs, "Ray refuses to reuse a submission id"
        self.submitted.append(kwargs)
        self.jobs[kwargs["submission_id"]] = FakeJob(kwargs["submission_id"], "PENDING", kwargs["entrypoint"],
                                                     kwargs["metadata"], start_time=len(self.jobs) * 1000)
        return kwargs["submission_id"]

    def get_job_status(self, submission_id):
        return self.jobs[submission_id].status

    def get_job_info(self, submission_id):
        return self.jobs[submission_id]

    def stop_job(self, submission_id):
        self.stopped.append(submission_id)
        self.jobs[submission_id].status = "STOPPED"
        return True


@pytest.fixture()
def client(monkeypatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(submit, "connect", lambda address: fake)
    monkeypatch.setattr(runs, "connect", lambda address: fake)
    return fake


def score_config(**overrides) -> SubmitConfig:
    return dataclasses.replace(SubmitConfig(job="score", job_args=SCORE_ARGS, address=ADDRESS), **overrides)


# ---- parsing -----------------------------------------------------------------------------------------------


def test_own_flags_anywhere_everything_else_goes_to_the_job():
    cfg = submit.parse(["score", "--archive", "s3://b/nih", "--address", ADDRESS, "--model", "m", "--follow"])
    assert (cfg.job, cfg.address, cfg.follow, cfg.resume) == ("score", ADDRESS, True, None)
    assert cfg.job_args == ("--archive", "s3://b/nih", "--model", "m")


def test_after_double_dash_everything_is_the_jobs():
    cfg = submit.parse(["--address", ADDRESS, "--", "synth", "--out", "x", "--follow"])
    assert (cfg.job, cfg.follow) == ("synth", False)
    assert cfg.job_args == ("--out", "x", "--follow")


def test_no_abbreviations_a_job_flag_is_never_taken_for_a_submit_flag():
    cfg = submit.parse(["score", "--add", "1", "--res", "2", "--address", ADDRESS])
    assert cfg.job_args == ("--add", "1", "--res", "2") and cfg.resume is None


def test_resume_form():
    cfg = submit.parse(["--resume", "score-abc", "--address", ADDRESS])
    assert (cfg.job, cfg.job_args, cfg.resume) == (None, (), "score-abc")


# ---- run ids, entrypoints, metadata ------------------------------------------------------------------------


def test_job_fields_are_read_from_the_config_dataclass():
    assert {"archive", "model", "out", "run_id", "chunk_size"} <= submit.job_fields("jobs.score")
    assert "run_id" not in submit.job_fields("jobs.synth")
    assert {"image_size", "tile_size", "backbone"} <= submit.job_fields("jobs.train_tiles")


def test_run_id_is_deterministic_and_handed_to_jobs_that_take_it():
    fields = submit.job_fields("jobs.score")
    run_id, args = submit.plan_run("score", SCORE_ARGS, fields)
    assert submit.plan_run("score", SCORE_ARGS, fields) == (run_id, args)
    assert run_id.startswith("score-") and len(run_id) == len("score-") + 12
    assert args == (*SCORE_ARGS, "--run-id", run_id)
    other, _ = submit.plan_run("score", (*SCORE_ARGS[:-1], "s3://b/other"), fields)
    assert other != run_id


def test_the_jobs_own_run_id_wins_and_jobs_without_one_get_none():
    assert submit.plan_run("score", (*SCORE_ARGS, "--run-id=nih-v1"), submit.job_fields("jobs.score")) == (
        "nih-v1", (*SCORE_ARGS, "--run-id=nih-v1"))
    run_id, args = submit.plan_run("synth", ("--out", "x"), submit.job_fields("jobs.synth"))
    assert run_id.startswith("synth-") and args == ("--out", "x")


def test_entrypoint_quotes_arguments():
    entry = submit.entrypoint_for("jobs.synth", ("--out", "dir with space/a'b"))
    assert shlex.split(entry) == ["python", "-m", "jobs.synth", "--out", "dir with space/a'b"]


def test_unknown_flags_accepts_negations_and_equals_forms():
    fields = submit.job_fields("jobs.score")
    assert submit.unknown_flags(("--out=x", "--no-out", "--chunk-size", "4", "-1"), fields) == []
    assert submit.unknown_flags(("--outt", "x", "--epochs=3"), fields) == ["--outt", "--epochs"]


def test_validate_names_every_problem_at_once(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    bad = SubmitConfig(job="score", job_args=("--archive", "a", "--epochs", "3", "--run-id", "a b"))
    with pytest.raises(ValueError) as err:
        submit.validate(bad, submit.submittable_jobs())
    text = str(err.value)
    assert "score has no flag --epochs" in text and "--run-id 'a b'" in text and "--address is required" in text
    with pytest.raises(ValueError, match="unknown job 'frobnicate': submit one of synth, train, quantize"):
        submit.validate(SubmitConfig(job="frobnicate", address=ADDRESS), submit.submittable_jobs())
    with pytest.raises(ValueError, match="--resume RUN_ID takes no job"):
        submit.validate(SubmitConfig(job="score", resume="x", address=ADDRESS), submit.submittable_jobs())
    with pytest.raises(ValueError, match="no jobs/__main__.py"):
        submit.validate(score_config(working_dir="/"), submit.submittable_jobs())


def test_cluster_commands_cannot_be_submitted_as_jobs():
    jobs = submit.submittable_jobs()
    assert {"synth", "train", "quantize", "train-tiles", "score"} <= set(jobs)
    assert not {"submit", "status", "logs", "stop", "list"} & set(jobs)
    assert jobs["train-tiles"] == "jobs.train_tiles"


# ---- submit and resume -------------------------------------------------------------------------------------


def test_submit_uses_the_run_id_as_submission_id_with_metadata_and_working_dir(client):
    summary = submit.run(score_config())
    [sent] = client.submitted
    assert sent["submission_id"] == summary.run_id == summary.submission_id and summary.attempt == 0
    assert shlex.split(sent["entrypoint"]) == ["python", "-m", "jobs.score", *SCORE_ARGS, "--run-id", summary.run_id]
    meta = sent["metadata"]
    assert (meta["job"], meta["archive"], meta["model"], meta["out"]) == ("score", "s3://b/nih", "s3://b/model",
                                                                          "s3://b/scores")
    assert (meta["run_id"], meta["attempt"]) == (summary.run_id, "0")
    assert all(isinstance(v, str) for v in meta.values())
    assert sent["runtime_env"]["working_dir"] == str(submit.PROJECT_ROOT)
    assert {".venv", ".git", "runs", ".cache", "tests"} <= set(sent["runtime_env"]["excludes"])
    assert summary.status == "PENDING"


def test_from_a_checkout_the_checkout_ships_with_the_clients_version_and_commit(client):
    assert submit.from_checkout()  # these tests run from the repository
    submit.run(score_config())
    [sent] = client.submitted
    env = sent["runtime_env"]
    assert env["working_dir"] == str(submit.PROJECT_ROOT) and "py_modules" not in env
    assert env["env_vars"] == provenance.job_environment()
    assert env["env_vars"]["TILESCOPE_VERSION"] == provenance.version() != "unknown"
    meta = sent["metadata"]
    assert (meta["tilescope_version"], meta["tilescope_commit"]) == (provenance.version(), provenance.commit() or "")


def test_from_an_installed_package_its_packages_ship_as_py_modules_never_site_packages(client, monkeypatch,
                                                                                       tmp_path, capsys):
    site = tmp_path / "site-packages"  # what an installed wheel looks like: packages beside other distributions
    for name in ("jobs", "cli", "actors", "storage", "xray", "numpy", "ray", "tilescope-0.1.0.dist-info"):
        (site / name).mkdir(parents=True)
    monkeypatch.setattr(submit, "PROJECT_ROOT", site)
    assert not submit.from_checkout() and submit.default_working_dir() is None
    summary = submit.run(score_config())
    [sent] = client.submitted
    env = sent["runtime_env"]
    assert "working_dir" not in env
    assert env["py_modules"] == [str(site / name) for name in ("jobs", "cli", "actors", "storage", "xray")]
    assert env["env_vars"] == provenance.job_environment()
    assert shlex.split(sent["entrypoint"])[:3] == ["python", "-m", "jobs.score"]
    assert f"submitted {summary.submission_id}" in capsys.readouterr().out
    # --working-dir still ships a checkout named explicitly.
    submit.run(score_config(working_dir=REPO, job_args=(*SCORE_ARGS, "--run-id", "x")))
    assert client.submitted[-1]["runtime_env"]["working_dir"] == REPO


def test_submitting_the_same_command_twice_is_refused_with_the_way_out(client):
    first = submit.run(score_config())
    with pytest.raises(ValueError, match=f"run {first.run_id} was already submitted .* is PENDING.*--resume"):
        submit.run(score_config())
    assert len(client.submitted) == 1


def test_resume_resubmits_the_same_entrypoint_under_suffixed_ids(client):
    first = submit.run(score_config())
    client.jobs[first.submission_id].status = "FAILED"
    again = submit.run(SubmitConfig(resume=first.run_id, address=ADDRESS))
    assert (again.submission_id, again.run_id, again.attempt) == (f"{first.run_id}-r1", first.run_id, 1)
    assert again.entrypoint == first.entrypoint  # same --run-id: the job skips what it finished
    assert client.submitted[-1]["metadata"]["resumes"] == first.run_id
    assert client.submitted[-1]["metadata"]["tilescope_version"] == provenance.version()
    assert client.submitted[-1]["runtime_env"]["env_vars"] == provenance.job_environment()  # shipped again
    client.jobs[again.submission_id].status = "STOPPED"
    third = submit.run(SubmitConfig(resume=f"{first.run_id}-r1", address=ADDRESS))  # an attempt's id works too
    assert (third.submission_id, third.attempt) == (f"{first.run_id}-r2", 2)
    assert client.submitted[-1]["metadata"]["resumes"] == f"{first.run_id}-r1"


@pytest.mark.parametrize(("status", "reason"), [("RUNNING", "stop it first"), ("SUCCEEDED", "only a FAILED")])
def test_resume_refuses_runs_that_are_running_or_succeeded(client, status, reason):
    first = submit.run(score_config())
    client.jobs[first.submission_id].status = status
    with pytest.raises(ValueError, match=f"latest submission {first.run_id} is {status}.*{reason}"):
        submit.run(SubmitConfig(resume=first.run_id, address=ADDRESS))


def test_resume_of_an_unknown_run_says_so(client):
    with pytest.raises(ValueError, match="--resume nope: no run with that id"):
        submit.run(SubmitConfig(resume="nope", address=ADDRESS))


# ---- status, stop, list, errors, dispatch ------------------------------------------------------------------


def test_status_and_stop_act_on_the_latest_attempt(client):
    first = submit.run(score_config())
    client.jobs[first.submission_id].status = "FAILED"
    submit.run(SubmitConfig(resume=first.run_id, address=ADDRESS))
    client.jobs[f"{first.run_id}-r1"].status = "RUNNING"
    info = runs.status(runs.StatusConfig(run_id=first.run_id))
    assert (info.submission_id, info.attempt, info.status, info.job) == (f"{first.run_id}-r1", 1, "RUNNING", "score")
    stopped = runs.stop(runs.StopConfig(run_id=first.run_id, wait_s=1))
    assert client.stopped == [f"{first.run_id}-r1"] and stopped.status == "STOPPED"
    assert runs.stop(runs.StopConfig(run_id=first.run_id)).status == "STOPPED" and len(client.stopped) == 1
    listed = runs.list_runs(runs.ListConfig())
    assert [r.submission_id for r in listed] == [first.run_id, f"{first.run_id}-r1"]
    with pytest.raises(ValueError, match="no run 'other' on this cluster"):
        runs.status(runs.StatusConfig(run_id="other"))


def test_report_errors_names_the_cause_and_the_fix(capsys):
    from ray.exceptions import AuthenticationError

    def refused() -> int:
        raise AuthenticationError("Authentication failed: Forbidden: Invalid authentication token\n\nmore")

    assert submit.report_errors("tilescope list", ADDRESS, refused) == 2
    err = capsys.readouterr().err
    assert f"the Ray cluster at {ADDRESS} refused the request (Authentication failed: Forbidden" in err
    assert "RAY_AUTH_MODE=token" in err and "RAY_AUTH_TOKEN_PATH" in err

    def unreachable() -> int:
        raise ConnectionError("Failed to connect")

    assert submit.report_errors("tilescope list", ADDRESS, unreachable) == 2
    assert "cannot reach the Ray Jobs API at http://127.0.0.1:8265" in capsys.readouterr().err


def test_ctrl_c_while_following_stops_only_the_client_in_one_line(capsys):
    def following() -> int:
        raise KeyboardInterrupt

    assert submit.report_errors("tilescope logs", ADDRESS, following) == 130
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "tilescope logs: interrupted; only this command stopped, the run goes on on the cluster (`tilescope status "
        "RUN` shows it, `tilescope stop RUN` stops it)"]
    assert captured.out == ""


def test_dispatcher_routes_cluster_commands_to_their_functions(capsys):
    for name in ("status", "logs", "stop"):
        with pytest.raises(SystemExit) as exit_:
            dispatcher.main([name, "--help"])
        assert exit_.value.code == 0
        assert f"usage: tilescope {name} [-h]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dispatcher.main(["submit", "--help"])
    assert "--resume RESUME" in capsys.readouterr().out


def test_submit_parser_mirrors_the_config():
    parser = submit.parser_for(SubmitConfig, "tilescope submit", "", positional=("job",), skip=("job_args",))
    dests = {action.dest for action in parser._actions} - {"help"}
    assert dests == {f.name for f in dataclasses.fields(SubmitConfig)} - {"job_args"}


def test_the_jobs_own_validation_runs_on_the_client_before_anything_is_sent(client):
    with pytest.raises(ValueError, match=r"score: invalid configuration:\n  - --chunk-size must be at least 1"):
        submit.run(score_config(job_args=(*SCORE_ARGS, "--chunk-size", "0")))
    with pytest.raises(ValueError, match="report: the following arguments are required: --metadata"):
        submit.run(SubmitConfig(job="report", job_args=("--results", "s3://b/r", "--out", "s3://b/o"),
                                address=ADDRESS))
    with pytest.raises(ValueError, match="score: argument --precision: invalid choice: 'int4'"):
        submit.run(score_config(job_args=(*SCORE_ARGS, "--precision", "int4")))
    assert client.submitted == []


def test_status_and_list_for_scripts_show_output_duration_and_progress(client, capsys):
    import json

    summary = submit.run(score_config())
    capsys.readouterr()  # submit's own line
    job = client.jobs[summary.submission_id]
    job.status, job.start_time = "RUNNING", 1_000_000
    client.logs[summary.submission_id] = ("run x: 2 shards\n[score] 60/480 images (12.5%)  40.0 images/s  errors 0  "
                                          "ETA 10s\nsome other line\n[score] 120/480 images (25.0%)  41.2 images/s  "
                                          "errors 1  ETA 8s\n")
    assert runs.status_main([summary.run_id, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["status"], body["out"], body["job"]) == ("RUNNING", "s3://b/scores", "score")
    assert body["progress"] == {"line": "[score] 120/480 images (25.0%)  41.2 images/s  errors 1  ETA 8s",
                                "done": 120, "total": 480, "eta": "8s"}
    assert body["duration_s"] > 0
    assert runs.status_main([summary.run_id]) == 0
    text = capsys.readouterr().out
    assert "output: s3://b/scores" in text and "progress: [score] 120/480 images" in text
    # a failed run's message is one line: Ray's copy of the log tail is left to `tilescope logs`
    job.status, job.end_time = "FAILED", 1_060_000
    job.message = ("Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 "
                   "chars):\ntilescope score: error: --archive x: not found")
    assert runs.status_main([summary.run_id]) == 0
    text = capsys.readouterr().out
    assert "Job entrypoint command failed with exit code 2" in text and "not found" not in text
    assert runs.list_main(["--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["run_id"], row["status"], row["out"], row["duration_s"]) == (summary.run_id, "FAILED",
                                                                             "s3://b/scores", 60.0)
    assert runs.list_main([]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-2:] == ["RUN", "OUTPUT"] and table[1].split()[-1] == "s3://b/scores"
    assert "1m00s" in table[1]
