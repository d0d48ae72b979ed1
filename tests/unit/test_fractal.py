"""xray.synth.fractal: IFS fractals, deterministic per seed, grey, at the model's input size, with real content."""

from __future__ import annotations

import numpy as np
import pytest

from xray.synth.fractal import (
    CONTRACTION,
    MAX_MAPS,
    MIN_COVERAGE,
    MIN_MAPS,
    PREVIEW,
    Ifs,
    chaos_game,
    density,
    fractal_density,
    fractal_image,
    fractal_images,
    largest_singular_values,
    random_ifs,
    tone,
)


@pytest.fixture(scope="module")
def images64() -> np.ndarray:
    return fractal_images(12, 64, seed=0)


def test_images_are_grey_uint8_at_the_input_size(images64):
    assert images64.shape == (12, 64, 64) and images64.dtype == np.uint8
    big = fractal_images(2, 224, seed=0)
    assert big.shape == (2, 224, 224) and big.dtype == np.uint8
    assert fractal_images(0, 32).shape == (0, 32, 32)


def test_the_same_seed_gives_the_same_bytes_and_a_prefix_is_the_smaller_set(images64):
    assert np.array_equal(fractal_images(12, 64, seed=0), images64)
    assert np.array_equal(fractal_images(5, 64, seed=0), images64[:5])  # image i depends on (seed, i) alone
    assert np.array_equal(fractal_image(0, 7, 64), images64[7])


def test_different_seeds_and_indices_give_different_images(images64):
    other = fractal_images(12, 64, seed=1)
    assert all(not np.array_equal(a, b) for a, b in zip(images64, other, strict=True))
    assert len({img.tobytes() for img in images64}) == 12


def test_every_image_has_a_wide_histogram_and_real_structure(images64):
    for img in images64:
        levels = np.unique(img)
        assert len(levels) >= 40, len(levels)  # not a two-tone mask: the greys a network sees
        assert img.std() >= 10.0
        assert int(img.max()) - int(img.min()) >= 40  # ground and ink differ by >= 50 levels before the blur
        # Structure, not noise: neighbouring pixels correlate strongly (noise alone would not).
        a, b = img[:, :-1].astype(float).ravel(), img[:, 1:].astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.5
    # Both polarities occur: dark fractal on light ground and the reverse (the median is the ground).
    medians = np.median(images64.reshape(12, -1), axis=1)
    assert medians.min() < 110 and medians.max() > 140


def test_kept_fractals_cover_a_real_share_of_the_frame():
    for index in range(8):
        t = fractal_density(3, index, PREVIEW)
        assert t.shape == (PREVIEW, PREVIEW) and 0.0 <= t.min() and t.max() == 1.0
        cover = np.count_nonzero(t) / t.size
        assert MIN_COVERAGE * 0.5 <= cover < 0.95, (index, cover)  # not a line or a dot, not a flood


def test_random_ifs_is_contractive_with_probabilities():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ifs = random_ifs(rng)
        k = len(ifs.a)
        assert MIN_MAPS <= k <= MAX_MAPS and ifs.a.shape == (k, 2, 2) and ifs.b.shape == (k, 2)
        svd = np.linalg.svd(ifs.a, compute_uv=False)[:, 0]
        np.testing.assert_allclose(largest_singular_values(ifs.a), svd, rtol=1e-9)
        assert (svd >= CONTRACTION[0] - 1e-9).all() and (svd <= CONTRACTION[1] + 1e-9).all()
        assert (ifs.p > 0).all() and ifs.p.sum() == pytest.approx(1.0)


def test_chaos_game_lands_on_the_attractor_of_a_known_ifs():
    # Sierpinski's triangle: three maps x -> x/2 + v_k/2. Its attractor has no point in the middle triangle.
    half = np.array([[0.5, 0.0], [0.0, 0.5]])
    vertices = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    ifs = Ifs(np.stack([half] * 3), vertices / 2, np.full(3, 1 / 3))
    points = chaos_game(ifs, np.random.default_rng(0), 20_000, walkers=256)
    assert points.shape[1] == 2 and len(points) >= 20_000
    assert points.min() >= -1e-9 and points.max() <= 1 + 1e-9
    x, y = points[:, 0], points[:, 1]
    middle = (y > 0.04) & (y < 0.48) & (x > 0.5 - y / 2 + 0.01) & (x < 0.5 + y / 2 - 0.01)  # upside down
    assert not middle.any()


def test_density_fits_the_points_into_the_frame_keeping_the_aspect():
    points = np.array([[0.0, 0.0], [2.0, 1.0], [2.0, 1.0]])
    counts = density(points, 50)
    assert counts.sum() == 3 and counts.dtype == np.int64
    rows, cols = np.nonzero(counts)
    assert cols.min() >= 2 and cols.max() <= 47  # MARGIN of 6% on the wide side
    assert counts[rows[cols.argmax()], cols.max()] == 2  # the repeated point counts twice
    assert rows[cols.argmax()] < rows[cols.argmin()]  # larger y is higher up (row 0 is the top)
    assert not density(np.zeros((10, 2)), 16).any()  # no area: nothing drawn
    t = tone(np.array([[0, 1], [16, 81]]))
    np.testing.assert_allclose(t, [[0, 1 / 3], [2 / 3, 1]])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="size >= 8"):
        fractal_image(0, 0, 4)
    with pytest.raises(ValueError, match="n >= 0"):
        fractal_images(-1, 32)
