"""Errors that quote a user's input quote at most ~200 characters of it: a 287-byte YAML whose aliases expand to
9^7 strings is refused before it is built, and huge or deeply nested values are cut, for scalar and list flags."""

from __future__ import annotations

import pytest

from cli.config_files import QUOTE_LIMIT, quoted
from jobs import import_model, synth


def _alias_bomb(key: str) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *g\n"


def _error_of(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    return err


@pytest.mark.parametrize(("main", "key", "args"), [
    (synth.main, "n-images", []),                       # a scalar flag
    (import_model.main, "labels", ["--onnx", "m.onnx"]),  # a list flag
])
def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path, capsys, main, key, args):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb(key))
    assert config.stat().st_size < 400
    err = _error_of(main, ["--config", str(config), "--out", str(tmp_path / "out"), *args], capsys)
    assert "YAML anchors (&a) are not supported" in err and str(config) in err
    assert len(err) < 400
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("main", "body", "args"), [
    (synth.main, "n-images: '" + "9" * 5000 + "x'\n", []),
    (synth.main, "n-images: " + "[" * 50 + "1" + "]" * 50 + "\n", []),
    (import_model.main, "labels: [" + ", ".join(["[" + "'Mass', " * 300 + "'Nodule']"] * 40) + "]\n",
     ["--onnx", "m.onnx"]),
])
def test_huge_or_nested_values_are_quoted_short(tmp_path, capsys, main, body, args):
    config = tmp_path / "big.yaml"
    config.write_text(body)
    err = _error_of(main, ["--config", str(config), "--out", str(tmp_path / "out"), *args], capsys)
    assert len(err) < 2 * QUOTE_LIMIT + 120, err
    assert str(config) in err


def test_quoted_bounds_any_value():
    nested: list = ["lol"] * 9
    for _ in range(7):
        nested = [nested] * 9  # shared references: 9^8 strings if walked
    assert len(quoted(nested)) <= QUOTE_LIMIT
    assert len(quoted("x" * 10**6)) <= QUOTE_LIMIT and "..." in quoted("x" * 10**6)
    assert quoted("short") == "'short'" and quoted(12) == "12"
