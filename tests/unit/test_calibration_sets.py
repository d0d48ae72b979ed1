"""Calibration sources (xray.calibration.sets), the quantize flag that chooses one, and the manifest's record."""

from __future__ import annotations

import numpy as np
import pytest

from cli.flags import parser_for
from jobs import quantize, quantize_inputs
from xray.calibration.sets import (
    SYNTH_FIRST_INDEX,
    SYNTH_RENDER_SIZE,
    CalibrationSource,
    archive_calibration_ids,
    describe,
    generated_images,
    pixel_summary,
    synthetic_images,
)
from xray.metadata.manifests import ModelManifest, manifest_from_json


def test_sources_and_which_hold_patient_images():
    assert [s.value for s in CalibrationSource] == ["archive", "synthetic", "fractal"]
    assert [s.patient_images for s in CalibrationSource] == [True, False, False]


@pytest.mark.parametrize("source", [CalibrationSource.SYNTHETIC, CalibrationSource.FRACTAL])
def test_generated_sets_are_seeded_grey_pixels_at_the_model_input(source):
    a = generated_images(source, 6, 48, seed=0)
    assert a.shape == (6, 1, 48, 48) and a.dtype == np.uint8
    assert np.array_equal(a, generated_images(source, 6, 48, seed=0))
    assert np.array_equal(generated_images(source, 3, 48, seed=0), a[:3])  # image i depends on (seed, i)
    b = generated_images(source, 6, 48, seed=1)
    assert not any(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({img.tobytes() for img in a}) == 6
    assert all(img.std() > 5 for img in a)
    assert describe(source, 48)


def test_synthetic_images_are_synth_cases_decoded_like_an_archive_image():
    from PIL import Image

    from xray.codec.decode import resize_gray
    from xray.synth.images import synth_case

    pixels = synthetic_images(2, 40, seed=5)
    for i in range(2):
        case = synth_case(SYNTH_FIRST_INDEX + i, 5, SYNTH_RENDER_SIZE)
        assert np.array_equal(pixels[i, 0], resize_gray(Image.fromarray(case.image), 40))
    assert str(SYNTH_FIRST_INDEX) in describe(CalibrationSource.SYNTHETIC, 40)


def test_synthetic_calibration_never_reuses_an_archive_image():
    from xray.synth.images import synth_case

    archive = {synth_case(i, 0, 32).image_index for i in range(60)}
    calibration = {synth_case(SYNTH_FIRST_INDEX + i, 0, 32).image_index for i in range(60)}
    assert not archive & calibration


def test_generated_images_refuse_the_archive_source():
    with pytest.raises(ValueError, match="comes from an archive"):
        generated_images(CalibrationSource.ARCHIVE, 2, 32, 0)


def test_archive_subset_is_todays_draw():
    pool = [f"{i:08d}_000.png" for i in range(50)]
    chosen = archive_calibration_ids(list(reversed(pool)), 10, np.random.default_rng(3))
    expected = set(np.random.default_rng(3).choice(sorted(pool), size=10, replace=False).tolist())
    assert chosen == expected and len(chosen) == 10
    assert archive_calibration_ids(pool[:4], 10, np.random.default_rng(0)) == set(pool[:4])


def test_pixel_summary():
    pixels = np.array([[0, 0, 10, 10], [10, 10, 200, 255]], np.uint8)
    s = pixel_summary(pixels)
    assert s["mean"] == pytest.approx(pixels.mean(), abs=1e-3)
    assert s["std"] == pytest.approx(pixels.std(), abs=1e-3)
    assert (s["p1"], s["p50"], s["p99"]) == (0.0, 10.0, 255.0)
    assert all(np.isnan(v) for v in pixel_summary(np.zeros((0, 1, 4, 4), np.uint8)).values())


# ---- the quantize job's flag ------------------------------------------------------------------------------


def test_calibration_flag_lists_its_choices_and_parses_to_the_enum():
    parser = parser_for(quantize.QuantizeConfig, "tilescope quantize", "")
    flag = next(a for a in parser._actions if "--calibration" in a.option_strings)
    assert flag.choices == ["archive", "synthetic", "fractal"] and flag.default == CalibrationSource.ARCHIVE
    archive = next(a for a in parser._actions if "--archive" in a.option_strings)
    assert not archive.required


def test_validate_names_what_needs_an_archive():
    with pytest.raises(ValueError) as info:
        quantize.validate(quantize.QuantizeConfig(checkpoint="c", out="o"))
    assert "--archive is needed with --calibration archive" in str(info.value)
    with pytest.raises(ValueError) as info:
        quantize.validate(quantize.QuantizeConfig(checkpoint="c", out="o", calibration="fractal", max_drop=0.01,
                                                  metadata="m.csv"))
    msg = str(info.value)
    assert "--max-drop needs --archive" in msg and "--metadata needs --archive" in msg
    with pytest.raises(ValueError, match="--calibration 'gan' is not one of archive, synthetic, fractal"):
        quantize.validate(quantize.QuantizeConfig(checkpoint="c", out="o", archive="a", calibration="gan"))
    cfg = quantize.QuantizeConfig(checkpoint="c", out="o", calibration="synthetic")
    quantize.validate(cfg)  # no archive: calibration without patient data and no evaluation
    assert cfg.calibration is CalibrationSource.SYNTHETIC


def _source(size: int = 32) -> quantize_inputs.Source:
    return quantize_inputs.Source("dwsep_cnn", ("Effusion", "Mass"), size, "", None, {}, None, {}, {}, {})


def test_without_an_archive_calibration_is_generated_and_nothing_is_evaluated():
    cfg = quantize.QuantizeConfig(checkpoint="c", out="o", calibration="fractal", calibration_size=5, seed=2)
    quantize.validate(cfg)
    images = quantize_inputs.draw_images(quantize.input_plan(cfg), _source())
    assert np.array_equal(images.calibration, generated_images(CalibrationSource.FRACTAL, 5, 32, 2))
    assert images.eval_ids == () and images.eval_pixels.shape == (0, 1, 32, 32)
    assert images.eval_labels.shape == (0, 2)
    record = quantize.calibration_record(cfg, _source(), images, {"measured": False, "recipe": "histogram-fast",
                                                                  "ranges": "histogram", "bias_correction": "fast"})
    assert record["source"] == "fractal" and record["patient_images"] is False and record["images"] == 5
    assert record["archive"] is None and record["split"] is None and "fractal" in record["generator"]
    assert record["pixels"] == pixel_summary(images.calibration)
    assert (record["recipe"], record["ranges"], record["bias_correction"]) == ("histogram-fast", "histogram", "fast")


# ---- the manifest records the source ----------------------------------------------------------------------


def _model_manifest(calibration: dict) -> dict:
    return ModelManifest(model="m", labels=("Effusion",), input_size=32, irs={"fp32": "fp32/model.xml"}, split=None,
                         calibration=calibration).to_json()


def test_manifest_reads_the_calibration_source_and_old_manifests_still_read():
    new = manifest_from_json(_model_manifest({"source": "fractal", "images": 300}), "new")
    assert new.calibration_source == "fractal"
    old = manifest_from_json(_model_manifest({"archive": "s3://b/nih", "images": 300, "seed": 0}), "old")
    assert old.calibration_source == "archive"  # before the source was recorded, the archive was the only one
    imported = manifest_from_json(_model_manifest({}), "imported")
    assert imported.calibration_source is None
    future = manifest_from_json(_model_manifest({"source": "gan"}), "future")  # a later source still reads
    assert future.calibration_source == "gan"
