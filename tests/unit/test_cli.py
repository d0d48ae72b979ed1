"""cli.flags (flags generated from a config dataclass) and the `tilescope JOB` dispatcher in jobs.__main__."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import jobs.__main__ as dispatcher
from cli.flags import coerce_choices, config_from_args, field_docs, parser_for, require_valid
from cli.job_main import job_main

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


class Mode(enum.StrEnum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True)
class ModeConfig:
    mode: Mode = Mode.SAFE
    """How to run."""
    fallback: Mode | None = None
    """Mode to fall back to."""


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
    assert "Where the archive lives. (required)" in " ".join(text.split())
    assert "(default: None)" not in text  # required flags and optional ones without a default
    assert "Optional maximum drop.\n" in text.replace(" (default", "\n(default")


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


# ---- enum-typed fields -------------------------------------------------------------------------------------


def test_enum_flag_lists_its_choices_and_parses_to_the_member():
    parser = parser_for(ModeConfig, "tilescope mode", "A job with modes.")
    assert action(parser, "--mode").choices == ["fast", "safe"]
    assert action(parser, "--fallback").choices == ["fast", "safe"]  # Mode | None -> Mode
    text = parser.format_help()
    assert "--mode {fast,safe}" in text and "(default: safe)" in text
    cfg = config_from_args(ModeConfig, parser.parse_args(["--mode", "fast", "--fallback", "safe"]))
    assert cfg.mode is Mode.FAST and cfg.fallback is Mode.SAFE
    cfg = config_from_args(ModeConfig, parser.parse_args([]))
    assert cfg.mode is Mode.SAFE and cfg.fallback is None


def test_enum_flag_with_a_bad_choice_exits_2_listing_the_choices(capsys):
    parser = parser_for(ModeConfig, "tilescope mode", "A job with modes.")
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--mode", "slow"])
    assert info.value.code == 2
    assert "argument --mode: invalid choice: 'slow' (choose from 'fast', 'safe')" in capsys.readouterr().err


def test_coerce_choices_turns_valid_strings_into_members_and_names_bad_ones():
    cfg = ModeConfig(mode="fast", fallback=None)  # as tests and benchmarks build it
    assert coerce_choices(cfg) == []
    assert cfg.mode is Mode.FAST and cfg.fallback is None
    assert json.dumps(dataclasses.asdict(cfg)) == '{"mode": "fast", "fallback": null}'
    bad = ModeConfig(mode="slow", fallback="Fast")
    assert coerce_choices(bad) == ["--mode 'slow' is not one of fast, safe",
                                   "--fallback 'Fast' is not one of fast, safe"]
    assert bad.mode == "slow"  # left as given


def test_job_main_runs_the_parsed_config_and_reports_errors_as_exit_2(capsys):
    seen: list[ModeConfig] = []

    def run(cfg: ModeConfig) -> str:
        seen.append(cfg)
        if cfg.mode is Mode.FAST:
            raise ValueError("too fast")
        return f"ran {cfg.mode}"

    assert job_main(ModeConfig, run, "tilescope mode", "A job with modes.\n\nMore.", [],
                    print_summary=print) == 0
    assert seen[-1].mode is Mode.SAFE
    assert capsys.readouterr().out == "ran safe\n"
    assert job_main(ModeConfig, run, "tilescope mode", "A job with modes.", ["--fast"],
                    rewrite_argv=lambda args: ["--mode", args[0][2:]], print_summary=print) == 2
    captured = capsys.readouterr()
    assert captured.err == "tilescope mode: error: too fast\n" and captured.out == ""
    with pytest.raises(SystemExit) as info:
        job_main(ModeConfig, run, "tilescope mode", "A job with modes.", ["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: tilescope mode")


def test_job_enum_flags_list_their_choices():
    from jobs import quantize, report, score, synth, train, train_tiles

    expected = {
        (score.ScoreConfig, "--precision"): ["int8", "fp32", "bf16"],
        (quantize.QuantizeConfig, "--preset"): ["performance", "mixed"],
        (quantize.QuantizeConfig, "--calibration"): ["archive", "synthetic", "fractal"],
        (train.TrainConfig, "--train-precision"): ["auto", "bf16", "fp32"],
        (train.TrainConfig, "--backbone"): ["densenet121", "resnet18", "mobilenet_v3_small", "dwsep_cnn", "vgg16"],
        (train_tiles.TrainTilesConfig, "--combiner"): ["mean", "max", "stacked"],
        (train_tiles.TrainTilesConfig, "--preset"): ["performance", "mixed"],
        (train_tiles.TrainTilesConfig, "--train-precision"): ["auto", "bf16", "fp32"],
        (train_tiles.TrainTilesConfig, "--backbone"): ["densenet121", "resnet18", "mobilenet_v3_small", "dwsep_cnn",
                                                       "vgg16"],
        (synth.SynthConfig, "--csv-style"): ["2017", "2020"],
        (report.ReportConfig, "--eval-split"): ["all", "train_val", "train", "val", "test"],
        (report.ReportConfig, "--fit-split"): ["all", "train_val", "train", "val", "test"],
        (report.ReportConfig, "--apply-split"): ["all", "train_val", "train", "val", "test"],
    }
    for (cls, flag), choices in expected.items():
        assert action(parser_for(cls, "tilescope x", ""), flag).choices == choices, (cls.__name__, flag)


def test_score_precision_flag_parses_to_irprecision_and_rejects_others(capsys):
    from actors.openvino_ir import IRPrecision
    from jobs.score import ScoreConfig

    parser = parser_for(ScoreConfig, "tilescope score", "")
    cfg = config_from_args(ScoreConfig, parser.parse_args(["--archive", "a", "--model", "m", "--out", "o",
                                                           "--precision", "fp32"]))
    assert cfg.precision is IRPrecision.FP32 and cfg.precision == "fp32"
    with pytest.raises(SystemExit) as info:
        dispatcher.main(["score", "--archive", "a", "--model", "m", "--out", "o", "--precision", "int4"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'int4' (choose from 'int8', 'fp32', 'bf16')" in err


def test_configs_built_with_plain_strings_are_coerced_or_named():
    from actors.openvino_ir import IRPrecision, QuantizationPreset
    from jobs import report, score, train_tiles
    from xray.metadata.splits import Split
    from xray.models.precision import Precision
    from xray.tiles.join import Combiner

    cfg = score.ScoreConfig(archive="a", model="m", out="o", precision="fp32")
    score.validate(cfg)
    assert cfg.precision is IRPrecision.FP32
    tiles = train_tiles.TrainTilesConfig(archive="a", out="o", combiner="max", preset="mixed",
                                         train_precision="bf16")
    train_tiles.validate(tiles)
    assert (tiles.combiner, tiles.preset, tiles.train_precision) == (Combiner.MAX, QuantizationPreset.MIXED,
                                                                     Precision.BF16)
    assert type(tiles.combiner) is Combiner and type(tiles.preset) is QuantizationPreset
    rep = report.ReportConfig(results=("r",), metadata="m", out="o", eval_split="all")
    report.validate(rep)
    assert rep.eval_split is Split.ALL and rep.fit_split is Split.VAL

    with pytest.raises(ValueError) as info:
        train_tiles.validate(train_tiles.TrainTilesConfig(archive="a", out="o", combiner="median",
                                                          preset="fast", train_precision="fp8"))
    msg = str(info.value)
    assert "--combiner 'median' is not one of mean, max, stacked" in msg
    assert "--preset 'fast' is not one of performance, mixed" in msg
    assert "--train-precision 'fp8' is not one of auto, bf16, fp32" in msg
    assert msg.count("\n  - ") == 3
    with pytest.raises(ValueError) as info:
        report.validate(report.ReportConfig(results=("r",), metadata="m", out="o", eval_split="dev",
                                            apply_split="TEST"))
    assert str(info.value) == ("invalid configuration:\n  - --eval-split 'dev' is not one of all, train_val, train, "
                               "val, test\n  - --apply-split 'TEST' is not one of all, train_val, train, val, test")


# ---- the real jobs -----------------------------------------------------------------------------------------


def job_configs() -> dict[str, type]:
    from jobs.demo import DemoConfig
    from jobs.quantize import QuantizeConfig
    from jobs.score import ScoreConfig
    from jobs.synth import SynthConfig
    from jobs.train import TrainConfig
    from jobs.train_tiles import TrainTilesConfig

    return {"train": TrainConfig, "quantize": QuantizeConfig, "score": ScoreConfig, "synth": SynthConfig,
            "train_tiles": TrainTilesConfig, "demo": DemoConfig}


JOB_MODULES = ["train", "quantize", "score", "synth", "train_tiles", "demo"]


@pytest.mark.parametrize("job", JOB_MODULES)
def test_every_job_config_field_has_a_docstring(job):
    cls = job_configs()[job]
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    assert all(docs.values())


@pytest.mark.parametrize("job", JOB_MODULES)
def test_python_m_job_help_lists_every_flag_the_whole_description_and_the_examples(job):
    import importlib

    proc = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RAY_ADDRESS": "", "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tilescope {job.replace('_', '-')}")
    cls = job_configs()[job]
    docs = field_docs(cls)
    flat = " ".join(proc.stdout.split())  # argparse wraps help text
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
        assert " ".join(docs[f.name].split()) in flat, f.name
    assert "(default: None)" not in flat
    doc = importlib.import_module(f"jobs.{job}").__doc__
    prose = [block for block in doc.split("\n\n") if not block.strip("\n").startswith("    ")]
    assert " ".join(prose[-1].split()) in flat  # the last paragraph too, not only the first line
    examples = [line.strip() for line in doc.splitlines() if line.startswith("    ")]
    assert examples and "\nexamples:\n" in proc.stdout
    assert all(example in proc.stdout for example in examples)
    for option in ("--config FILE", "--print-config", "--verbose"):
        assert option in proc.stdout


def test_train_validate_collects_every_problem():
    from jobs.train import TrainConfig, validate

    with pytest.raises(ValueError) as info:
        validate(TrainConfig(archive="a", out="b", backbone="vgg19", epochs=0, batch_size=1,
                             train_precision="fp8"))
    msg = str(info.value)
    choices = "densenet121, dwsep_cnn, mobilenet_v3_small, resnet18, vgg16"
    assert f"--backbone 'vgg19' is unknown; choose one of: {choices}" in msg
    assert "--epochs must be at least 1" in msg
    assert "--batch-size" in msg and "--train-precision 'fp8'" in msg
    assert msg.count("\n  - ") == 4
    validate(TrainConfig(archive="a", out="b", backbone="dwsep_cnn"))  # a good config passes


def test_score_quantize_synth_validate_collect_every_problem():
    from jobs import quantize, score, synth

    with pytest.raises(ValueError) as info:
        score.validate(score.ScoreConfig(archive="a", model="m", out="o", precision="int4", chunk_size=0,
                                         actors=-1))
    msg = str(info.value)
    assert "--precision 'int4'" in msg and "--chunk-size" in msg and "--actors" in msg
    assert "--precision 'int4' is not one of int8, fp32, bf16" in msg
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
    with pytest.raises(ValueError, match="--csv-style '2019' is not one of 2017, 2020"):
        synth.validate(synth.SynthConfig(out="o", csv_style="2019"))


def test_score_read_ahead_follows_chunk_size_unless_given():
    from jobs.score import ScoreConfig, validate
    from jobs.score_stream import READ_AHEAD_CHUNKS
    from jobs.score_stream import read_ahead_mb as mb

    def read_ahead_mb(cfg: ScoreConfig) -> int:
        return mb(cfg.chunk_mb, cfg.buffer_mb)

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
    rc = dispatcher.main(["train", "--archive", "a", "--out", "b", "--batch-size", "1", "--epochs", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tilescope train: error: invalid configuration")
    assert "--batch-size" in err and "--epochs" in err
    with pytest.raises(SystemExit) as info:  # a fixed set of values is checked by the parser, naming the choices
        dispatcher.main(["train", "--archive", "a", "--out", "b", "--backbone", "vgg19"])
    assert info.value.code == 2
    assert "argument --backbone: invalid choice: 'vgg19' (choose from 'densenet121'" in capsys.readouterr().err


def test_python_m_jobs_unknown_job_exits_2():
    proc = subprocess.run([sys.executable, "-m", "jobs", "nope"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "unknown job 'nope'" in proc.stderr


def test_dispatcher_lists_commands_in_one_aligned_column(capsys):
    assert dispatcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    names = [row.split()[0] for row in rows]
    assert set(names) == set(dispatcher.JOBS)
    starts = {row.index(row.split()[1], len(name) + 2) for row, name in zip(rows, names, strict=True)}
    assert len(starts) == 1  # every description starts in the same column, train-tiles included
    assert out.index("jobs:") < out.index("  train-tiles ") < out.index("cluster:") < out.index("  submit ")
    assert dispatcher.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tilescope ")


# ---- abbreviations, old spellings, config files ------------------------------------------------------------


def test_a_prefix_of_a_flag_is_an_error_not_that_flag(capsys):
    parser = parser_for(ExampleConfig, "tilescope example", "")
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--archive-uri", "a", "--epo", "3"])
    assert info.value.code == 2
    assert "unrecognized arguments: --epo 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the job a user runs: `--archiv` never becomes --archive
        dispatcher.main(["score", "--archiv", "a", "--model", "m", "--out", "o"])
    assert "unrecognized argument --archiv (did you mean --archive?); flags are never abbreviated" in \
        capsys.readouterr().err


def test_old_spellings_set_the_new_field_and_warn(capsys):
    from jobs.train import FLAG_ALIASES, TrainConfig

    parser = parser_for(TrainConfig, "tilescope train", "", aliases=FLAG_ALIASES)
    cfg = config_from_args(TrainConfig, parser.parse_args(["--archive", "a", "--out", "o", "--model", "resnet18",
                                                           "--precision", "fp32"]))
    assert cfg.backbone == "resnet18" and cfg.train_precision == "fp32"
    err = capsys.readouterr().err.splitlines()
    assert err == ["tilescope train: warning: --model is now --backbone; the old spelling still works in this "
                   "release only",
                   "tilescope train: warning: --precision is now --train-precision; the old spelling still works in "
                   "this release only"]
    text = parser.format_help()
    assert "--model" not in text.split("options:")[1].replace("(was --model)", "")  # hidden, named by the new one
    assert "(was --model)" in text and "(was --precision)" in text
    with pytest.raises(SystemExit):  # an old spelling is checked like the new one
        parser.parse_args(["--archive", "a", "--out", "o", "--model", "vgg19"])
    assert "argument --model: invalid choice: 'vgg19'" in capsys.readouterr().err


def test_config_file_values_with_the_command_line_winning(tmp_path, capsys):
    from jobs.train import FLAG_ALIASES, TrainConfig
    from jobs.train import main as train_main
    from xray.models.precision import Precision

    config = tmp_path / "train.yaml"
    config.write_text("archive: s3://b/nih\nout: s3://b/ckpt\nbackbone: dwsep_cnn\ninput-size: 96\n"
                      "batch_size: 16\nimagenet-backbone: false\ntrain-precision: bf16\nthreads: 2.0\n")
    assert train_main(["--config", str(config), "--input-size", "128", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# tilescope train --config FILE")
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    parser = parser_for(TrainConfig, "tilescope train", "", aliases=FLAG_ALIASES, common=True)
    from cli.job_main import parse_job_args

    cfg, _ = parse_job_args(TrainConfig, parser, ["--config", str(again)], FLAG_ALIASES)
    assert cfg == TrainConfig(archive="s3://b/nih", out="s3://b/ckpt", backbone="dwsep_cnn", input_size=128,
                              batch_size=16, train_precision=Precision.BF16, threads=2)
    assert cfg.train_precision is Precision.BF16 and type(cfg.threads) is int


@pytest.mark.parametrize(("body", "message"), [
    ("epochs: three\n", "epochs: invalid int value 'three'"),
    ("epocs: 3\n", "'epocs' is not a flag of tilescope train"),
    ("backbone: vgg19\n", "backbone: 'vgg19' is not one of densenet121, resnet18"),
    ("train-precision: fp8\n", "train-precision: 'fp8' is not one of auto, bf16, fp32"),
    ("imagenet-backbone: yes please\n", "imagenet-backbone: expected true or false"),
    ("epochs: 2.5\n", "epochs: expected an integer"),
    ("verbose: true\n", "'verbose' is not a flag of tilescope train"),
    ("- a\n- b\n", "holds a list, not a mapping"),
    ("a: [unclosed\n", "not YAML or JSON"),
])
def test_a_bad_config_file_exits_2_naming_the_file_and_the_key(tmp_path, capsys, body, message):
    from jobs.train import main as train_main

    config = tmp_path / "c.yaml"
    config.write_text("archive: a\nout: o\n" + body if body[0].isalpha() else body)
    with pytest.raises(SystemExit) as info:
        train_main(["--config", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --config {config}: " in err and message in err, err


def test_a_missing_config_file_exits_2(tmp_path, capsys):
    from jobs.score import main as score_main

    with pytest.raises(SystemExit) as info:
        score_main(["--config", str(tmp_path / "none.yaml")])
    assert info.value.code == 2
    assert "none.yaml: cannot read it" in capsys.readouterr().err


def test_old_keys_in_a_config_file_warn(tmp_path, capsys):
    from jobs.train import main as train_main

    config = tmp_path / "old.yaml"
    config.write_text("archive: a\nout: o\nmodel: resnet18\nprecision: fp32\n")
    assert train_main(["--config", str(config), "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "warning: key 'model' is now 'backbone'" in captured.err
    assert "\nbackbone: resnet18\n" in captured.out and "\ntrain-precision: fp32\n" in captured.out


def test_replay_from_a_runs_record(tmp_path, capsys):
    from jobs.score import ScoreConfig
    from jobs.score import main as score_main

    recorded = ScoreConfig(archive="s3://b/nih", model="s3://b/model", out="s3://b/scores",
                           metadata="s3://b/nih/Data_Entry_2017.csv", precision="fp32", chunk_size=32,
                           actor_cpus=2.0)
    record = {"claim_version": 2, "run_id": "score-abc", "archive": "s3://b/nih", "shards": {},
              "config": json.loads(json.dumps(dataclasses.asdict(recorded)))}
    run_json = tmp_path / "_run.json"
    run_json.write_text(json.dumps(record))
    assert score_main(["--config", str(run_json), "--out", "s3://b/replay", "--print-config"]) == 0
    captured = capsys.readouterr()
    assert f"replaying the config recorded in {run_json}" in captured.err
    lines = [line for line in captured.out.splitlines() if not line.startswith("#")]
    # --model takes several models: one prints as a YAML list of one
    assert lines[:4] == ["archive: s3://b/nih", "model: ['s3://b/model']", "out: s3://b/replay",
                         "metadata: s3://b/nih/Data_Entry_2017.csv"]
    assert "precision: fp32" in lines and "chunk-size: 32" in lines and "actor-cpus: 2.0" in lines


def test_print_config_without_required_flags_is_a_template(capsys):
    from jobs.score import main as score_main

    assert score_main(["--print-config"]) == 0
    out = capsys.readouterr().out
    assert "\narchive: null  # required\n" in out and "\nmodel: null  # required\n" in out
    assert "\nprecision: int8\n" in out and "\nchunk-size: 64\n" in out


def test_help_sections_reflow_prose_and_keep_examples():
    from cli.flags import help_sections

    doc = """First line of the job,
continued here.

Second paragraph
on two lines.

- a list item
- kept as written

    tilescope x --a 1 \\
        --b 2
    ray job submit -- python -m jobs.x
"""
    description, epilog = help_sections(doc)
    assert description == ("First line of the job, continued here.\n\nSecond paragraph on two lines.\n\n"
                           "- a list item\n- kept as written")
    assert epilog == "examples:\n  tilescope x --a 1 \\\n      --b 2\n  ray job submit -- python -m jobs.x"
    assert help_sections(None) == ("", None)


def test_submit_accepts_the_common_options_and_old_spellings_of_a_job():
    from jobs import submit

    fields = submit.job_fields("jobs.train")
    assert {"config", "print_config", "verbose", "model", "precision", "backbone", "train_precision"} <= fields
    assert submit.unknown_flags(("--config", "c.yaml", "--model", "resnet18", "--verbose"), fields) == []
    assert submit.unknown_flags(("--model", "m"), submit.job_fields("jobs.train_tiles")) == ["--model"]
