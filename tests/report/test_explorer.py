"""explorer.html in a real browser (Debian's Chromium driven by Playwright): the image shown under the
mouse is the decode of the grid cell at that code, a click pins the point in every variant."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.report.build import build_report
from pyro_vae.report.explorer import FILE, Lattice, lattice_for, quantize
from pyro_vae.study.runner import Study, run_study
from pyro_vae.training.runs import load_run

CHROMIUM = "/usr/bin/chromium"
STUDY = {
    "name": "explore", "title": "AE vs VAE, explored", "seeds": [0],
    "base": {"dataset": "mnist", "epochs": 1, "train_limit": 1000, "test_limit": 300, "batch_size": 100, "hidden_dim": 64},
    "variants": {"AE": {"guide": "delta", "beta": 0.0}, "VAE": {"guide": "gaussian"},
                 "VAE-10d": {"guide": "gaussian", "latent_dim": 10}},
    "evaluation": {"num_samples": 20, "generated": 200, "pairs": 100, "likelihood_images": 100},
}
SCREENSHOT = os.environ.get("PYRO_VAE_SCREENSHOT_DIR")  # keep the screenshot somewhere lasting when set

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        message = "needs playwright (pip install -e '.[explorer]') and Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("explore") / "runs"
    study = Study.from_dict(STUDY, "explore.toml")
    run_study(study, runs_dir, progress=False, log=lambda m: None)
    return study, runs_dir, build_report(runs_dir, runs_dir / "report", log=lambda m: None).parent


def test_the_page_is_linked_self_contained_and_small(report):
    _, _, out = report
    page = (out / FILE).read_text()
    assert f'href="{FILE}"' in (out / "report.html").read_text() and f"({FILE})" in (out / "report.md").read_text()
    assert (out / FILE).stat().st_size < 5e6
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1))
    assert [v["name"] for v in data["variants"]] == ["AE", "VAE"]  # 2-D variants only
    assert all(len(v["label"]) == len(v["distance"]) == data["n"] ** 2 for v in data["variants"])


def _canvas_grey(page, selector: str) -> np.ndarray:
    pixels = page.evaluate(f"""() => {{ const c = document.querySelector({json.dumps(selector)});
        return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }}""")
    rgba = np.array(pixels, dtype=np.uint8).reshape(-1, 4)
    assert (rgba[:, 0] == rgba[:, 1]).all() and (rgba[:, 3] == 255).all()
    return rgba[:, 0]


def test_hover_shows_the_decoded_cell_and_a_click_pins_it_everywhere(report, tmp_path):
    sync_playwright = _browser()
    study, runs_dir, out = report
    decoders = {v: load_run(study.run_dir(runs_dir, v, 0)) for v in ("AE", "VAE")}
    lattice = lattice_for([np.load(study.run_dir(runs_dir, v, 0) / "evaluation.npz")["codes"] for v in decoders])
    # A known code: the VAE's code of the first test image, at the centre of its cell.
    row, col = lattice.cell(np.load(study.run_dir(runs_dir, "VAE", 0) / "evaluation.npz")["codes"][0])
    z = lattice.codes()[row * lattice.n + col]
    expected = {v: quantize(run.decode(torch.from_numpy(z[None])).numpy())[0] for v, run in decoders.items()}
    assert not np.array_equal(expected["AE"], expected["VAE"])

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto((out / FILE).as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=20000)
        data = json.loads(page.text_content("#explorer-data"))
        assert isinstance(lattice, Lattice) and np.isclose(data["low"], lattice.low) and data["n"] == lattice.n
        box = page.locator(".variant[data-variant='AE'] .plot canvas").bounding_box()
        x = box["x"] + float(z[0] - lattice.low) / (lattice.high - lattice.low) * 320
        y = box["y"] + float(lattice.high - z[1]) / (lattice.high - lattice.low) * 320
        page.mouse.move(x, y)
        for v in decoders:
            shown = _canvas_grey(page, f".variant[data-variant='{v}'] .hover canvas")
            np.testing.assert_array_equal(shown, expected[v], err_msg=f"{v}: hover image differs from the decoded cell")
            info = page.text_content(f".variant[data-variant='{v}'] .hover .info")
            i = row * lattice.n + col
            cell = data["variants"][[w["name"] for w in data["variants"]].index(v)]
            assert f"classifier: {data['classes'][cell['label'][i]]} ({cell['confidence'][i]}%)" in info
            assert f"nearest training code: {cell['distance'][i]:.2f}" in info

        page.mouse.click(x, y)
        page.mouse.move(box["x"] + 5, box["y"] + 5)  # away: the pinned panels must not follow the mouse
        for v in decoders:
            pinned = _canvas_grey(page, f".variant[data-variant='{v}'] .pinned canvas")
            np.testing.assert_array_equal(pinned, expected[v], err_msg=f"{v}: pinned image differs from the decoded cell")
            pin = page.locator(f".variant[data-variant='{v}'] .pin")
            assert pin.is_visible()
            mark, plot = pin.bounding_box(), page.locator(f".variant[data-variant='{v}'] .plot canvas").bounding_box()
            assert abs(mark["x"] + mark["width"] / 2 - (plot["x"] + x - box["x"])) < 3
            assert abs(mark["y"] + mark["height"] / 2 - (plot["y"] + y - box["y"])) < 3
        assert not np.array_equal(_canvas_grey(page, ".variant[data-variant='AE'] .hover canvas"), expected["AE"])
        page.mouse.move(x, y)
        shot = Path(SCREENSHOT or tmp_path) / "explorer.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"explorer screenshot: {shot}")
