"""xray.synth.detail: small findings drawn at full resolution whose evidence a whole-image downscale loses
(`synth --detail fine`), and the coarse default left byte-identical."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jobs.synth import main
from xray.synth.detail import BODY_CONTRAST, FINE_FINDINGS, FINE_PAINTERS, FindingDetail
from xray.synth.images import synth_case

SIZE = 1024


def _find(seed: int, label: str, size: int = 256) -> int:
    return next(i for i in range(400) if label in synth_case(i, seed, size).findings)


def _downscaled_peak(layer: np.ndarray, out: int) -> float:
    return float(np.asarray(Image.fromarray(layer).resize((out, out), Image.Resampling.BOX)).max())


def test_coarse_is_the_default_and_fine_keeps_every_other_draw() -> None:
    plain = next(i for i in range(400) if synth_case(i, 4, 128).findings
                 and not set(synth_case(i, 4, 128).findings) & set(FINE_FINDINGS))
    coarse = synth_case(plain, 4, 128)
    assert coarse.image.tobytes() == synth_case(plain, 4, 128, detail=FindingDetail.COARSE).image.tobytes()
    fine = synth_case(plain, 4, 128, detail=FindingDetail.FINE)
    assert fine.bboxes == coarse.bboxes and fine.findings == coarse.findings  # clutter has its own stream
    changed = fine.image.astype(int) - coarse.image.astype(int)
    assert changed.any() and changed.min() >= 0  # vessels seen end-on: small opacities added, nothing removed
    assert not changed[:, :8].any()  # outside the lungs nothing moves
    nodule = _find(4, "Nodule", 128)
    coarse, fine = synth_case(nodule, 4, 128), synth_case(nodule, 4, 128, detail=FindingDetail.FINE)
    assert coarse.image.tobytes() != fine.image.tobytes()
    assert coarse.findings == fine.findings and coarse.patient_id == fine.patient_id
    again = synth_case(nodule, 4, 128, detail=FindingDetail.FINE)
    assert again.image.tobytes() == fine.image.tobytes()


@pytest.mark.parametrize("label", FINE_FINDINGS)
def test_fine_findings_are_small_and_inside_the_image(label: str) -> None:
    areas = []
    for i in [i for i in range(300) if label in synth_case(i, 9, 64).findings][:12]:
        case = synth_case(i, 9, 512, detail=FindingDetail.FINE)
        (_, x, y, w, h), = [b for b in case.bboxes if b[0] == label]
        assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512
        areas.append(w * h / 512**2)
    assert areas and max(areas) < 0.015  # a few % of the width across, at most
    assert min(areas) > 0.00005


@pytest.mark.parametrize("label", FINE_FINDINGS)
def test_a_downscale_to_224_loses_most_of_the_fine_evidence(label: str) -> None:
    rng = np.random.default_rng(3)
    layer = np.zeros((SIZE, SIZE), np.float32)
    FINE_PAINTERS[label](layer, 0.5, 0.5, 1.0, rng)
    full = float(layer.max())
    assert full > 0.03  # 8+ grey levels at full resolution: visible to a full-resolution tile
    assert _downscaled_peak(layer, 224) < full / 3  # an area-averaging downscale divides it
    # the faint body alone is near the noise: about 1.5 grey levels
    assert BODY_CONTRAST * 255 < 2.0


def test_coarse_findings_survive_the_same_downscale() -> None:
    # The contrast case: the original generator's nodule is drawn at 256 px, so a downscale keeps it.
    i = _find(2, "Nodule")
    coarse = synth_case(i, 2, SIZE).image.astype(np.float32) / 255
    fine = synth_case(i, 2, SIZE, detail=FindingDetail.FINE).image.astype(np.float32) / 255
    (_, x, y, w, h), = [b for b in synth_case(i, 2, SIZE).bboxes if b[0] == "Nodule"]
    cx, cy = int(x + w / 2), int(y + h / 2)
    box = (slice(cy - 40, cy + 40), slice(cx - 40, cx + 40))

    def kept(img: np.ndarray) -> float:
        small = np.asarray(Image.fromarray(img[box]).resize((18, 18), Image.Resampling.BOX))
        return (small.max() - np.median(small)) / (img[box].max() - np.median(img[box]))

    assert kept(coarse) > 0.5
    assert kept(fine) < kept(coarse)


def test_vessel_dots_look_like_a_downscaled_nodule_but_have_no_specks() -> None:
    from xray.synth.detail import paint_nodule, paint_vessel_dots

    nodules, vessels = np.zeros((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.float32)
    rng = np.random.default_rng(0)
    for k in range(16):
        y, x = (k // 4 + 0.5) / 4, (k % 4 + 0.5) / 4
        paint_nodule(nodules, y, x, 1.0, rng)
        paint_vessel_dots(vessels, [(y, x)], rng)
    small_n = np.asarray(Image.fromarray(nodules).resize((224, 224), Image.Resampling.BOX))
    small_v = np.asarray(Image.fromarray(vessels).resize((224, 224), Image.Resampling.BOX))
    assert 0.5 < small_v.max() / small_n.max() < 2.0  # alike at 224 px
    assert nodules.max() > 4 * vessels.max()  # but only the nodule has specks at full resolution


def test_synth_cli_takes_detail(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path / "a"), "--n-images", "6", "--size", "64", "--shards", "1",
                 "--detail", "fine"]) == 0
    assert (tmp_path / "a" / "images_001.tar.gz").exists()
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "b"), "--n-images", "6", "--size", "64", "--detail", "sharp"])
    assert exc.value.code == 2
    assert "choose from 'coarse', 'fine'" in capsys.readouterr().err
