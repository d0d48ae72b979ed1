"""jobs.cli (flags generated from a config dataclass) and the `tilescope JOB` dispatcher in jobs.__main__."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import jobs.__main__ as dispatcher
from jobs.cli import config_from_args, field_docs, parser_for, require_valid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class ExampleConfig:
    archive_uri: str
    """Where the archive lives."""
    epochs: int = 3
    """How many epochs."""
    lr: float = 0.1
    """Learning rate."""
    max_drop: float | None = None
    """Optional maximum drop."""
    tag: str | None = None
    """An optional tag."""
    fast: bool = False
    """Go fast."""
    check: bool = True
    """Run the checks."""
    names: tuple[str, ...] = ()
    """Layer names to keep."""
    labels: tuple[str, ...] = field(default_factory=lambda: ("a", "b"))
    """Labels, from a default factory."""
    undocumented: int = 1


def action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    matches = [a for a in parser._actions if flag in a.option_strings]
    assert len(matches) == 1, f"{flag} not in {[a.option_strings for a in parser._actions]}"
    return matches[0]


@pytest.fixture()
def parser() -> argparse.ArgumentParser:
    return parser_for(ExampleConfig, "tilescope example", "An example job.")


# ---- field_docs and parser_for -----------------------------------------------------------------------------


def test_field_docs_reads_the_string_after_each_field():
    docs = field_docs(ExampleConfig)
    assert docs["archive_uri"] == "Where the archive lives."
    assert docs["max_drop"] == "Optional maximum drop."
    assert docs["labels"] == "Labels, from a default factory."
    assert "undocumented" not in docs
    assert set(docs) == {f.name for f in dataclasses.fields(ExampleConfig)} - {"undocumented"}


def test_flag_names_help_and_required(parser):
    a = action(parser, "--archive-uri")
    assert a.dest == "archive_uri"
    assert a.required is True
    assert a.help == "Where the archive lives."
    assert action(parser, "--epochs").required is False
    assert action(parser, "--undocumented").help == ""
    text = parser.format_help()
    assert "An example job." in text
    assert "Learning rate." in text
    assert "(default: 3)" in text


def test_types_of_the_generated_flags(parser):
    assert action(parser, "--epochs").type is int
    assert action(parser, "--lr").type is float
    assert action(parser, "--max-drop").type is float  # float | None -> float
    assert action(parser, "--tag").type is str  # str | None -> str
    assert action(parser, "--names").nargs == "*"
    assert isinstance(action(parser, "--fast"), argparse.BooleanOptionalAction)
    assert "--no-fast" in action(parser, "--fast").option_strings


def test_defaults_parse_back_into_the_default_config(parser):
    cfg = config_from_args(ExampleConfig, parser.parse_args(["--archive-uri", "s3://b/nih"]))
    assert cfg == ExampleConfig("s3://b/nih")
    assert cfg.labels == ("a", "b")
    assert cfg.max_drop is None and cfg.tag is None


def test_every_kind_of_flag_parses_to_the_field_type(parser):
    args = parser.parse_args([
        "--archive-uri", "runs/x", "--epochs", "7", "--lr", "3e-4", "--max-drop", "0.05", "--tag", "t1",
        "--fast", "--no-check", "--names", "conv1", "fc", "--labels",
    ])
    cfg = config_from_args(ExampleConfig, args)
    assert cfg == ExampleConfig("runs/x", epochs=7, lr=3e-4, max_drop=0.05, tag="t1", fast=True, check=False,
                                names=("conv1", "fc"), labels=())
    assert type(cfg.epochs) is int and type(cfg.lr) is float and type(cfg.max_drop) is float
    assert type(cfg.names) is tuple  # a list from argparse becomes the field's tuple
    hash(cfg)  # frozen and hashable: no list slipped through


def test_missing_required_flag_exits_2_naming_it(parser, capsys):
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--epochs", "2"])
    assert info.value.code == 2
    assert "--archive-uri" in capsys.readouterr().err


def test_wrong_type_exits_2_naming_the_flag(parser, capsys):
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--archive-uri", "x", "--epochs", "three"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "invalid int value: 'three'" in err


def test_require_valid_names_every_problem():
    require_valid([])  # nothing to report: no exception
    with pytest.raises(ValueError) as info:
        require_valid(["--a is bad", "--b is worse"])
    assert str(info.value) == "invalid configuration:\n  - --a is bad\n  - --b is worse"


# ---- the real jobs -----------------------------------------------------------------------------------------


def job_configs() -> dict[str, type]:
    from jobs.quantize import QuantizeConfig
    from jobs.score import ScoreConfig
    from jobs.synth import SynthConfig
    from jobs.train import TrainConfig

    return {"train": TrainConfig, "quantize": QuantizeConfig, "score": ScoreConfig, "synth": SynthConfig}


@pytest.mark.parametrize("job", ["train", "quantize", "score", "synth"])
def test_every_job_config_field_has_a_docstring(job):
    cls = job_configs()[job]
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    assert all(docs.values())


@pytest.mark.parametrize("job", ["train", "quantize", "score", "synth"])
def test_python_m_job_help_lists_every_flag(job):
    proc = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tilescope {job}")
    cls = job_configs()[job]
    docs = field_docs(cls)
    flat = " ".join(proc.stdout.split())  # argparse wraps help text
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
        assert " ".join(docs[f.name].split()) in flat, f.name


def test_train_validate_collects_every_problem():
    from jobs.train import TrainConfig, validate

    with pytest.raises(ValueError) as info:
        validate(TrainConfig(archive="a", out="b", model="vgg16", epochs=0, batch_size=1, precision="fp8"))
    msg = str(info.value)
    choices = "densenet121, dwsep_cnn, mobilenet_v3_small, resnet18"
    assert f"--model 'vgg16' is unknown; choose one of: {choices}" in msg
    assert "--epochs must be at least 1" in msg
    assert "--batch-size" in msg and "--precision 'fp8'" in msg
    assert msg.count("\n  - ") == 4
    validate(TrainConfig(archive="a", out="b", model="dwsep_cnn"))  # a good config passes


def test_score_quantize_synth_validate_collect_every_problem():
    from jobs import quantize, score, synth

    with pytest.raises(ValueError) as info:
        score.validate(score.ScoreConfig(archive="a", model="m", out="o", precision="int4", chunk_size=0,
                                         actors=-1))
    msg = str(info.value)
    assert "--precision 'int4'" in msg and "--chunk-size" in msg and "--actors" in msg
    with pytest.raises(ValueError) as info:
        quantize.validate(quantize.QuantizeConfig(checkpoint="c", archive="a", out="o", calibration_size=0,
                                                  preset="fast", max_drop=1.5, eval_size=5))
    msg = str(info.value)
    assert all(f in msg for f in ("--calibration-size", "--preset 'fast'", "--max-drop must be in",
                                  "--max-drop needs --eval-size"))
    with pytest.raises(ValueError) as info:
        synth.validate(synth.SynthConfig(out=" ", n_images=0, size=1, seed=-1))
    msg = str(info.value)
    assert all(f in msg for f in ("--out", "--n-images must be at least 1, got 0", "--size", "--seed"))


def test_score_read_ahead_follows_chunk_size_unless_given():
    from jobs.score import READ_AHEAD_CHUNKS, ScoreConfig, read_ahead_mb, validate

    base = dict(archive="a", model="m", out="o")
    assert read_ahead_mb(ScoreConfig(**base)) == READ_AHEAD_CHUNKS * 8
    # Raising --chunk-mb for big images widens the window with it, so the actors are not starved.
    assert read_ahead_mb(ScoreConfig(**base, chunk_mb=32)) == READ_AHEAD_CHUNKS * 32
    assert read_ahead_mb(ScoreConfig(**base, chunk_mb=32, buffer_mb=100)) == 100
    assert read_ahead_mb(ScoreConfig(**base, buffer_mb=0)) == 0  # Ray Data's own budget
    with pytest.raises(ValueError, match="--buffer-mb"):
        validate(ScoreConfig(**base, buffer_mb=-1))


# ---- the tilescope dispatcher ------------------------------------------------------------------------------


def test_dispatcher_unknown_job_exits_2_with_usage(capsys):
    assert dispatcher.main(["frobnicate", "--x"]) == 2
    captured = capsys.readouterr()
    assert "tilescope: unknown job 'frobnicate'" in captured.err
    assert "usage: tilescope JOB" in captured.err
    for job in ("synth", "train", "quantize", "score"):
        assert f"  {job} " in captured.err
    assert captured.out == ""


def test_dispatcher_help_exits_0_and_no_args_exits_2(capsys):
    assert dispatcher.main(["--help"]) == 0
    assert "usage: tilescope JOB" in capsys.readouterr().out
    assert dispatcher.main([]) == 2


def test_dispatcher_forwards_the_rest_to_the_job(capsys):
    with pytest.raises(SystemExit) as info:
        dispatcher.main(["synth", "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tilescope synth")


def test_dispatcher_job_with_invalid_flags_exits_2_naming_them(capsys):
    rc = dispatcher.main(["train", "--archive", "a", "--out", "b", "--model", "vgg16", "--epochs", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tilescope train: error: invalid configuration")
    assert "--model 'vgg16'" in err and "--epochs" in err


def test_python_m_jobs_unknown_job_exits_2():
    proc = subprocess.run([sys.executable, "-m", "jobs", "nope"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "unknown job 'nope'" in proc.stderr
