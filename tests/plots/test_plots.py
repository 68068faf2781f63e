"""Tests for pyro_vae.plots: every figure builds from small synthetic arrays."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from pyro_vae import plots

VARIANTS = ("AE", "MAP-AE", "VAE")
CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def codes(rng):
    scales = {"AE": 8.0, "MAP-AE": 2.0, "VAE": 1.0}
    return {k: rng.normal(size=(200, 2)) * s for k, s in scales.items()}


@pytest.fixture
def labels(rng):
    return rng.integers(0, 10, size=200)


def _images(rng, m, flat=True):
    x = rng.random((m, 784))
    return x if flat else x.reshape(m, 28, 28)


# --------------------------------------------------------------- save_figure


def test_save_figure_writes_valid_png_atomically(tmp_path, codes, labels):
    fig = plots.code_scatter(codes, labels, CLASSES)
    out = tmp_path / "sub" / "scatter.png"
    ret = plots.save_figure(fig, out, dpi=50)
    assert ret == out and out.is_file() and out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    w, h = fig.get_size_inches() * 50
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert abs(img.shape[0] - h) <= 1 and abs(img.shape[1] - w) <= 1
    assert os.listdir(out.parent) == ["scatter.png"]  # no temp file left behind
    # overwriting works and still leaves a single file
    plots.save_figure(fig, out, dpi=50)
    assert os.listdir(out.parent) == ["scatter.png"]


def test_saved_figures_are_small_and_their_bytes_depend_on_the_figure_only(tmp_path, codes, labels):
    from PIL import Image

    a = plots.save_figure(plots.code_scatter(codes, labels, CLASSES), tmp_path / "a.png")
    b = plots.save_figure(plots.code_scatter(codes, labels, CLASSES), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()  # a rebuild stores nothing new in git
    image = Image.open(a)
    assert image.mode == "P" and "Software" not in image.info  # palette, no version stamp
    raw = io.BytesIO()
    plots.code_scatter(codes, labels, CLASSES).savefig(raw, format="png", dpi=plots.DEFAULT_DPI, facecolor="white")
    assert a.stat().st_size < 0.6 * len(raw.getvalue())
    # The palette keeps what the figure shows: pixels on average within a grey level of the full-colour render.
    full = np.asarray(Image.open(raw).convert("RGB"), dtype=int)
    error = np.abs(full - np.asarray(image.convert("RGB"), dtype=int))
    assert error.mean() < 1 and np.percentile(error, 99) <= 16


def test_save_figure_cleans_up_on_failure(tmp_path):
    fig = Figure()
    ax = fig.subplots()
    ax.text(0.5, 0.5, r"$\undefinedmacro$")  # mathtext error at render time
    with pytest.raises(ValueError):
        plots.save_figure(fig, tmp_path / "bad.png")
    assert os.listdir(tmp_path) == []


def test_save_figure_rejects_non_figure(tmp_path):
    with pytest.raises(ValueError, match="Figure"):
        plots.save_figure("not a figure", tmp_path / "x.png")


# --------------------------------------------------------------- code_scatter


def test_code_scatter_shared_limits_and_circles(codes, labels):
    fig = plots.code_scatter(codes, labels, CLASSES)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(VARIANTS)
    xlims = {ax.get_xlim() for ax in fig.axes}
    ylims = {ax.get_ylim() for ax in fig.axes}
    assert len(xlims) == 1 and len(ylims) == 1
    lim = xlims.pop()[1]
    # robust limit: covers the widest variant (AE, scale 8) but not absurdly
    assert 8.0 * 2 < lim < 8.0 * 5
    for ax, name in zip(fig.axes, VARIANTS):
        circles = sorted(p.get_radius() for p in ax.patches if isinstance(p, Circle))
        assert circles == [1.0, 2.0, 3.0]
        assert all(p.get_linestyle() == "--" for p in ax.patches if isinstance(p, Circle))
        assert ax.get_title().startswith(name)
        assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 200
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == CLASSES


def test_code_scatter_explicit_limit_and_label_dict(codes, rng):
    lab = {k: rng.integers(0, 3, size=len(v)) for k, v in codes.items()}
    fig = plots.code_scatter(codes, lab, None, sigmas=(1, 2), limit=5.0)
    for ax in fig.axes:
        assert ax.get_xlim() == (-5.0, 5.0) and ax.get_ylim() == (-5.0, 5.0)
        assert len([p for p in ax.patches if isinstance(p, Circle)]) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1", "2"]


def test_code_scatter_higher_dims_and_no_labels(rng):
    fig = plots.code_scatter({"VAE": rng.normal(size=(50, 5))})
    assert len(fig.axes) == 1
    assert "first 2 of 5 dims" in fig.axes[0].get_title()
    assert not fig.legends


def test_code_scatter_wraps_many_variants(rng):
    codes = {f"v{i}": rng.normal(size=(20, 2)) for i in range(6)}
    fig = plots.code_scatter(codes)
    assert len(fig.axes) == 6


def test_code_scatter_bad_inputs(codes, labels):
    with pytest.raises(ValueError, match="lengths must match"):
        plots.code_scatter(codes, labels[:150])
    with pytest.raises(ValueError, match="need at least 2"):
        plots.code_scatter({"AE": np.zeros((10, 1))})
    with pytest.raises(ValueError, match="class_names"):
        plots.code_scatter(codes, labels, ["a", "b"])
    with pytest.raises(ValueError, match="empty dict"):
        plots.code_scatter({})
    with pytest.raises(ValueError, match="dict"):
        plots.code_scatter(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="no entry"):
        plots.code_scatter(codes, {"AE": labels})


# --------------------------------------------------------------- images


def test_image_grid(rng):
    imgs = {"AE": _images(rng, 12), "VAE": _images(rng, 12, flat=False)}
    fig = plots.image_grid(imgs, ncols=4, title="samples")
    assert len(fig.axes) == 2
    for ax, name in zip(fig.axes, imgs):
        assert ax.get_title() == name
        (im,) = ax.images
        assert im.get_array().shape == (3 * 28 + 2, 4 * 28 + 3)  # 1-px gaps
    assert fig._suptitle.get_text() == "samples"


def test_image_grid_bad_inputs(rng):
    with pytest.raises(ValueError, match="expected 784"):
        plots.image_grid({"AE": rng.random((4, 100))}, ncols=2)
    with pytest.raises(ValueError, match="expected 28x28"):
        plots.image_grid({"AE": rng.random((4, 20, 20))}, ncols=2)
    with pytest.raises(ValueError, match="ncols"):
        plots.image_grid({"AE": _images(rng, 4)}, ncols=0)


@pytest.mark.parametrize("grid", [1, 5])
def test_manifold_pixel_size_and_ticks(rng, grid):
    vals = np.linspace(-2, 2, grid)
    imgs = {k: _images(rng, grid * grid) for k in VARIANTS}
    fig = plots.manifold(imgs, grid, {k: vals * (i + 1) for i, k in enumerate(VARIANTS)})
    assert len(fig.axes) == len(VARIANTS)
    for i, ax in enumerate(fig.axes):
        (im,) = ax.images
        assert im.get_array().shape == (grid * 28, grid * 28)
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks[0] == f"{vals[0] * (i + 1):.2g}"
        assert len(ax.get_yticks()) == grid


def test_manifold_layout_matches_manifold_codes(rng):
    g = 3
    vals = np.array([-1.0, 0.0, 1.0])
    codes = plots.manifold_codes(vals)
    assert codes.shape == (g * g, 2)
    # "decode" each code into a constant image that encodes its position
    imgs = np.repeat((codes[:, :1] * 10 + codes[:, 1:] + 20) / 40.0, 784, axis=1)
    fig = plots.manifold({"VAE": imgs}, g, vals)
    big = np.asarray(fig.axes[0].images[0].get_array())
    top_left, bottom_right = big[0, 0], big[-1, -1]
    assert top_left == pytest.approx((-10 + 1 + 20) / 40)  # z1 = -1, z2 = +1
    assert bottom_right == pytest.approx((10 - 1 + 20) / 40)  # z1 = +1, z2 = -1


def test_manifold_bad_inputs(rng):
    with pytest.raises(ValueError, match="grid_size"):
        plots.manifold({"AE": _images(rng, 8)}, 3)
    with pytest.raises(ValueError, match="axis_values"):
        plots.manifold({"AE": _images(rng, 9)}, 3, np.arange(4))
    with pytest.raises(ValueError, match="expected 784"):
        plots.manifold({"AE": rng.random((9, 783))}, 3)


def test_reconstructions(rng):
    orig = _images(rng, 6)
    recons = {k: _images(rng, 6) for k in VARIANTS}
    fig = plots.reconstructions(orig, recons)
    assert len(fig.axes) == 1 + len(VARIANTS)
    assert [ax.get_ylabel() for ax in fig.axes] == ["original", *VARIANTS]
    for ax in fig.axes:
        assert ax.images[0].get_array().shape == (28, 6 * 28 + 5)
    with pytest.raises(ValueError, match="lengths must match"):
        plots.reconstructions(orig, {"AE": _images(rng, 5)})
    with pytest.raises(ValueError, match="expected 784"):
        plots.reconstructions(rng.random((6, 10)), recons)


# --------------------------------------------------------------- scalar summaries


def test_spread_bars(rng):
    spreads = {k: rng.random((3, 10)) + i for i, k in enumerate(VARIANTS)}
    fig = plots.spread_bars(spreads, CLASSES)
    (ax,) = fig.axes
    assert len(ax.patches) == 10 * len(VARIANTS)
    heights = [p.get_height() for p in ax.patches[:10]]
    np.testing.assert_allclose(heights, spreads["AE"].mean(axis=0))
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(VARIANTS)
    # single seed (1-D) is accepted
    plots.spread_bars({"AE": rng.random(10)}, CLASSES)
    with pytest.raises(ValueError, match="number of classes"):
        plots.spread_bars({"AE": rng.random((2, 10)), "VAE": rng.random((2, 9))}, CLASSES)
    with pytest.raises(ValueError, match="class_names"):
        plots.spread_bars({"AE": rng.random((2, 10))}, CLASSES[:5])


@pytest.mark.parametrize("style", ["bar", "point"])
def test_metric_bars(rng, style):
    vals = {k: rng.normal(-100, 2, size=4) for k in VARIANTS}
    vals["one seed"] = np.array([-90.0])
    fig = plots.metric_bars(vals, "test ELBO", "nats", style=style)
    (ax,) = fig.axes
    assert ax.get_title() == "test ELBO" and ax.get_ylabel() == "nats"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(vals)
    if style == "bar":
        assert len(ax.patches) == len(vals)
    with pytest.raises(ValueError, match="no values"):
        plots.metric_bars({"AE": []}, "t", "y")
    with pytest.raises(ValueError, match="style"):
        plots.metric_bars(vals, "t", "y", style="pie")


# --------------------------------------------------------------- training curves


def _run(rng, n_epochs=6, offset=0.0):
    return [{"epoch": e, "train_elbo": -300 / e - 100 + offset + rng.normal(),
             "test_elbo": -300 / e - 105 + offset + rng.normal()} for e in range(1, n_epochs + 1)]


def test_training_curves_seeds_and_single_run(rng):
    curves = {"AE": [_run(rng) for _ in range(3)], "VAE": _run(rng, offset=5.0)}
    fig = plots.training_curves(curves)
    assert len(fig.axes) == 2
    ae, vae = fig.axes
    assert len(ae.lines) == 2 and len(vae.lines) == 2
    assert len(ae.collections) == 2  # min/max bands for train and test
    assert len(vae.collections) == 0  # one run: no band
    assert ae.get_ylim() == vae.get_ylim()
    np.testing.assert_array_equal(ae.lines[0].get_xdata(), np.arange(1, 7))
    assert "3 seeds" in ae.get_title()
    # robust y limits leave out the first epoch's (much lower) ELBO
    assert ae.get_ylim()[0] > -300


def test_training_curves_missing_keys_and_std_band(rng):
    run = _run(rng)
    for line in run[::2]:
        del line["test_elbo"]
    run.append({"final": True})  # lines without an epoch are skipped
    fig = plots.training_curves({"AE": [run, _run(rng)]}, band="std", ylim=(-500, 0))
    (ax,) = fig.axes
    assert ax.get_ylim() == (-500, 0)
    assert len(ax.lines[1].get_xdata()) == 6


def test_training_curves_each_seed_for_runs_of_different_lengths(rng):
    short = _run(rng)[:4]
    fig = plots.training_curves({"VAE": [_run(rng), short]}, keys=("test_elbo",), band="each")
    (ax,) = fig.axes
    # Two curves, each with a dot at its own last epoch; no band (a mean would jump where a seed ends).
    curves = [l for l in ax.lines if l.get_marker() in (None, "None", "")]
    dots = [l for l in ax.lines if l.get_marker() == "o"]
    assert [len(l.get_xdata()) for l in curves] == [6, 4] and [float(d.get_xdata()[0]) for d in dots] == [6.0, 4.0]
    assert len(ax.collections) == 0
    assert ax.get_ylim()[0] > -300  # the first epochs are left out of the limits here too


def test_training_curves_bad_inputs(rng):
    with pytest.raises(ValueError, match="no line"):
        plots.training_curves({"AE": [{"epoch": 1, "loss": 3.0}]})
    with pytest.raises(ValueError, match="non-empty list"):
        plots.training_curves({"AE": []})
    with pytest.raises(ValueError, match="mix"):
        plots.training_curves({"AE": [_run(rng), 3]})
    with pytest.raises(ValueError, match="band"):
        plots.training_curves({"AE": _run(rng)}, band="iqr")


# --------------------------------------------------------------- densities


def test_marginal_densities(codes, rng):
    fig = plots.marginal_densities(codes)
    assert len(fig.axes) == len(VARIANTS) * 2
    xlims = {ax.get_xlim() for ax in fig.axes}
    assert len(xlims) == 1
    for ax in fig.axes:
        assert len(ax.lines) == 2  # ArviZ KDE + N(0, 1)
        assert ax.lines[1].get_linestyle() == "--"
    # more dims than max_axes: only the first max_axes columns
    fig = plots.marginal_densities({"VAE": rng.normal(size=(100, 6))}, max_axes=3)
    assert len(fig.axes) == 3
    assert "first 3 of 6" in fig._suptitle.get_text()


def test_prior_density(codes, labels):
    extent = (-4, 4, -3, 3)
    pts = plots.density_grid_points(extent, 30)
    assert pts.shape == (900, 2)
    logp = (-0.5 * (pts**2).sum(axis=1)).reshape(30, 30)
    assert logp[0, 0] == pytest.approx(-0.5 * (16 + 9))  # row <-> y, column <-> x
    fig = plots.prior_density(codes["VAE"], labels, logp, extent, CLASSES, title="prior")
    main = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(main) == 1 and len(fig.axes) == 2  # panel + colourbar
    ax = main[0]
    assert ax.get_xlim() == (-4, 4) and ax.get_ylim() == (-3, 3)
    # dict form: one panel per variant, same extent
    fig = plots.prior_density(codes, labels, logp, extent)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == len(VARIANTS)


def test_prior_density_bad_inputs(codes, labels):
    logp = np.zeros((10, 10))
    with pytest.raises(ValueError, match=r"\(G, G\)"):
        plots.prior_density(codes["VAE"], labels, np.zeros(10), (-1, 1, -1, 1))
    with pytest.raises(ValueError, match="extent"):
        plots.prior_density(codes["VAE"], labels, logp, (1, -1, -1, 1))
    with pytest.raises(ValueError, match="lengths must match"):
        plots.prior_density(codes["VAE"], labels[:10], logp, (-1, 1, -1, 1))
    with pytest.raises(ValueError, match="must match"):
        plots.prior_density(codes, labels, {"AE": logp}, (-1, 1, -1, 1))


def test_accepts_torch_tensors(codes, labels):
    torch = pytest.importorskip("torch")
    fig = plots.code_scatter({k: torch.as_tensor(v) for k, v in codes.items()},
                             torch.as_tensor(labels), CLASSES)
    assert len(fig.axes) == len(VARIANTS)


def test_fidelity_by_distance_draws_one_line_per_variant_and_refuses_ragged_bands():
    distance = np.geomspace(0.3, 30, 10)
    bands = {"AE": (distance, np.linspace(1.0, 0.4, 10), np.linspace(1.0, 4.0, 10)),
             "VAE": (distance / 3, np.full(10, 0.95), np.full(10, 1.1))}
    fig = plots.fidelity_by_distance(bands, title="t")
    left, right = fig.axes[:2]
    assert len(left.get_lines()) == len(right.get_lines()) == 3  # two variants and the dashed 'as good' line
    assert left.get_xscale() == "log" and np.allclose(left.get_lines()[0].get_ydata(), bands["AE"][1])
    with pytest.raises(ValueError, match="one length"):
        plots.fidelity_by_distance({"AE": (distance, np.ones(9), np.ones(10))})
