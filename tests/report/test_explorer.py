"""explorer.html in a real browser (Debian's Chromium driven by Playwright): each panel is zoomed to its
own variant's codes and the toggle puts them all on the shared box and back; every panel shows a decode
before the first hover; the image shown under the mouse is the decode of the lattice cell at that code;
a click pins the same code in every variant, in both views."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.report.build import build_report
from pyro_vae.report.explorer import FILE, GRID, SHARED_GRID, Lattice, own_lattice, quantize, shared_lattice, sheet_tile, write_explorer
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
SIZE = 320  # a plot's side in CSS pixels
SHOWN = ("AE", "VAE")

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


def _data(out: Path) -> dict:
    return json.loads(re.search(r'id="explorer-data">(.*?)</script>', (out / FILE).read_text(), re.S).group(1))


def _lattice(box: dict) -> Lattice:
    return Lattice(box["low"][0], box["low"][1], box["side"], box["n"])


def _codes(study, runs_dir, variant) -> np.ndarray:
    return np.load(study.run_dir(runs_dir, variant, 0) / "evaluation.npz")["codes"]


def test_the_page_is_linked_self_contained_small_and_the_same_at_each_build(report, tmp_path):
    study, runs_dir, out = report
    page = (out / FILE).read_text()
    assert f'href="{FILE}"' in (out / "report.html").read_text() and f"({FILE})" in (out / "report.md").read_text()
    assert (out / FILE).stat().st_size < 5e6
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    data = _data(out)
    assert [v["name"] for v in data["variants"]] == list(SHOWN)  # 2-D variants only
    owns = [own_lattice(_codes(study, runs_dir, v)) for v in SHOWN]
    shared = shared_lattice(owns)
    for v, own in zip(data["variants"], owns):
        assert v["own"]["n"] == GRID and v["shared"]["n"] == SHARED_GRID
        assert _lattice(v["own"]) == own and _lattice(v["shared"]) == shared  # one shared box, each its own
        assert all(len(v[k]["label"]) == len(v[k]["distance"]) == v[k]["n"] ** 2 for k in ("own", "shared"))
        assert shared.low1 <= own.low1 and own.high1 <= shared.high1 and shared.low2 <= own.low2 and own.high2 <= shared.high2
    again = write_explorer(study, runs_dir, tmp_path, log=lambda m: None)
    assert again.read_bytes() == (out / FILE).read_bytes()  # same runs, same bytes


def test_an_own_box_holds_the_middle_of_the_codes_and_a_lattice_finds_their_cells():
    codes = np.random.default_rng(0).normal([3.0, -1.0], [0.5, 0.2], size=(2000, 2)).astype(np.float32)
    own = own_lattice(codes)
    assert 2.6 < own.side < 3.1 and abs(own.low1 + own.side / 2 - 3) < 0.1 and abs(own.low2 + own.side / 2 + 1) < 0.1
    assert np.mean([own.contains(z) for z in codes]) > 0.98
    assert not own.contains(np.zeros(2)) and own.cell(np.array([-50.0, 50.0])) == (0, 0)
    for i in (0, 17, own.n * own.n - 1):
        assert own.cell(own.codes()[i]) == divmod(i, own.n)
    shared = shared_lattice([own])
    assert shared.low1 == shared.low2 == -shared.high1 and shared.high1 >= 3.0 and shared.contains(codes[0])


# ---------------------------------------------------------------------------------------------
# In Chromium


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, report):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto((report[2] / FILE).as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20000)
    yield page
    page.close()


class Explorer:
    """The page's data beside it: each variant's lattices and decoded sprite sheets, and where a code sits."""

    def __init__(self, page, data: dict):
        from PIL import Image

        self.page, self.data = page, data
        self.lattices = {v["name"]: {k: _lattice(v[k]) for k in ("own", "shared")} for v in data["variants"]}
        self.cells = {v["name"]: v for v in data["variants"]}
        self.sheets = {v["name"]: {k: np.array(Image.open(io.BytesIO(base64.b64decode(v[k]["sheet"].split(",", 1)[1]))))
                                   for k in ("own", "shared")} for v in data["variants"]}

    def lattice_of(self, variant: str, z) -> str:
        """Which lattice the page decodes z from in `variant`: its own wherever z lies in its own box."""
        return "own" if self.lattices[variant]["own"].contains(np.asarray(z)) else "shared"

    def tile(self, variant: str, z) -> np.ndarray:
        which = self.lattice_of(variant, z)
        lattice = self.lattices[variant][which]
        return sheet_tile(self.sheets[variant][which], lattice.n, *lattice.cell(np.asarray(z))).ravel()

    def point(self, variant: str, view: str, z) -> tuple[float, float]:
        """Page coordinates of code z on `variant`'s plot, in view 'own' or 'shared'."""
        lattice, box = self.lattices[variant][view], self.plot(variant)
        return (box["x"] + (float(z[0]) - lattice.low1) / lattice.side * SIZE,
                box["y"] + (lattice.high2 - float(z[1])) / lattice.side * SIZE)

    def plot(self, variant: str) -> dict:
        return self.page.locator(f".variant[data-variant='{variant}'] .plot canvas").bounding_box()

    def shown_z(self, variant: str, which: str) -> np.ndarray:
        box = self.page.locator(f".variant[data-variant='{variant}'] .{which}")
        return np.array([float(box.get_attribute("data-z1")), float(box.get_attribute("data-z2"))])

    def caption(self, variant: str) -> str:
        return self.page.text_content(f".variant[data-variant='{variant}'] .boxcap")

    def check(self, which: str, z, view: str) -> None:
        """Every variant shows, as `which` ('hover' or 'pinned'), the decode of code z from the lattice
        Python picks, with that cell's classifier label and distance, and marks z on its plot in `view`."""
        for v in SHOWN:
            np.testing.assert_allclose(self.shown_z(v, which), z, err_msg=f"{v}: a different code")
            kind = self.lattice_of(v, z)
            assert self.page.get_attribute(f".variant[data-variant='{v}'] .{which}", "data-lattice") == kind, v
            shown = _canvas_grey(self.page, f".variant[data-variant='{v}'] .{which} canvas")
            np.testing.assert_array_equal(shown, self.tile(v, z), err_msg=f"{v}: {which} image differs from the {kind} cell")
            lattice = self.lattices[v][kind]
            row, col = lattice.cell(np.asarray(z))
            i, cell = row * lattice.n + col, self.cells[v][kind]
            info = self.page.text_content(f".variant[data-variant='{v}'] .{which} .info")
            assert f"classifier: {self.data['classes'][cell['label'][i]]} ({cell['confidence'][i]}%)" in info
            assert f"nearest training code: {cell['distance'][i]:.2f}" in info
            assert ("outside this variant's codes" in info) == (kind == "shared"), info
            mark = self.page.locator(f".variant[data-variant='{v}'] .{'pin' if which == 'pinned' else 'hover-mark'}")
            on = self.lattices[v][view].contains(np.asarray(z))  # off its box, z is marked (dashed) at the box's edge
            assert mark.is_visible() and ("off" in mark.get_attribute("class")) == (not on), f"{v}: {which} mark"
            plot, (x, y), at = self.plot(v), self.point(v, view, z), mark.bounding_box()
            if not on:
                x, y = np.clip(x, plot["x"] + 7, plot["x"] + SIZE - 7), np.clip(y, plot["y"] + 7, plot["y"] + SIZE - 7)
            assert abs(at["x"] + at["width"] / 2 - x) < 1.5 and abs(at["y"] + at["height"] / 2 - y) < 1.5, v


def _canvas_grey(page, selector: str) -> np.ndarray:
    pixels = page.evaluate(f"""() => {{ const c = document.querySelector({json.dumps(selector)});
        return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }}""")
    rgba = np.array(pixels, dtype=np.uint8).reshape(-1, 4)
    assert (rgba[:, 0] == rgba[:, 1]).all() and (rgba[:, 3] == 255).all()  # painted, in grey
    return rgba[:, 0]


def _box_text(lattice: Lattice) -> str:
    return f"z1 ∈ [{lattice.low1:.2f}, {lattice.high1:.2f}], z2 ∈ [{lattice.low2:.2f}, {lattice.high2:.2f}]"


def _toggle(page, view: str) -> None:
    page.click(f"#toolbar button[data-box='{view}']")
    assert page.get_attribute("body", "data-box") == view
    assert page.get_attribute(f"#toolbar button[data-box='{view}']", "aria-pressed") == "true"


def test_each_panel_is_zoomed_to_its_own_codes_and_the_toggle_shares_one_box(report, page):
    study, runs_dir, _ = report
    ex = Explorer(page, json.loads(page.text_content("#explorer-data")))
    owns = {v: own_lattice(_codes(study, runs_dir, v)) for v in SHOWN}
    assert owns["AE"] != owns["VAE"]
    shared = shared_lattice(list(owns.values()))
    for v in SHOWN:
        assert ex.lattices[v]["own"] == owns[v]
        assert ex.caption(v) == f"own box: {_box_text(owns[v])}"
    assert ex.caption("AE") != ex.caption("VAE")
    for _ in range(2):  # there and back, twice
        _toggle(page, "shared")
        for v in SHOWN:
            assert ex.caption(v) == f"shared box: {_box_text(shared)}; dashed: its own"
        _toggle(page, "own")
        assert all(ex.caption(v) == f"own box: {_box_text(owns[v])}" for v in SHOWN)


def test_every_panel_shows_a_decode_before_the_first_hover(report, page):
    ex = Explorer(page, json.loads(page.text_content("#explorer-data")))
    centre = {v: np.array([b.low1 + b.side / 2, b.low2 + b.side / 2]) for v, b in ((v, ex.lattices[v]["own"]) for v in SHOWN)}
    for v in SHOWN:
        for which in ("hover", "pinned"):
            assert _canvas_grey(page, f".variant[data-variant='{v}'] .{which} canvas").max() > 0, f"{v} {which}: black"
        np.testing.assert_array_equal(_canvas_grey(page, f".variant[data-variant='{v}'] .hover canvas"), ex.tile(v, centre[v]))
        np.testing.assert_allclose(ex.shown_z(v, "hover"), centre[v])
        assert page.locator(f".variant[data-variant='{v}'] .hover-mark").is_visible()
        assert "the centre of its codes" in page.text_content(f".variant[data-variant='{v}'] .hover .info")
    ex.check("pinned", centre[SHOWN[0]], "own")  # the pin starts at the centre of the first variant's codes


def test_hover_on_a_zoomed_panel_shows_the_decode_of_its_own_lattice_cell(report, page):
    study, runs_dir, _ = report
    ex = Explorer(page, json.loads(page.text_content("#explorer-data")))
    for v in SHOWN:  # a known code: the variant's code of the first test image, at the centre of its own cell
        run, own = load_run(study.run_dir(runs_dir, v, 0)), ex.lattices[v]["own"]
        row, col = own.cell(_codes(study, runs_dir, v)[0])
        z = own.codes()[row * own.n + col]
        page.mouse.move(*ex.point(v, "own", z))
        shown = ex.shown_z(v, "hover")  # the code under the pointer: in that cell, all panels decoding it
        assert own.cell(shown) == (row, col) and ex.lattice_of(v, shown) == "own"
        expected = quantize(run.decode(torch.from_numpy(z[None])).numpy())[0]
        np.testing.assert_array_equal(ex.tile(v, shown), expected, err_msg=f"{v}: the sprite cell is not the decode")
        ex.check("hover", shown, "own")


def test_a_click_pins_the_same_code_in_every_variant_in_both_views(report, page, tmp_path):
    ex = Explorer(page, json.loads(page.text_content("#explorer-data")))
    # A point among the AE's codes outside the VAE's own box (the VAE must say so), and one among the VAE's.
    ae, vae = ex.lattices["AE"]["own"], ex.lattices["VAE"]["own"]
    outside = [z for z in ae.codes() if not vae.contains(z)]
    assert outside, "the AE's own box lies within the VAE's"
    z_ae = min(outside, key=lambda z: np.abs(z - [ae.low1 + ae.side / 2, ae.low2 + ae.side / 2]).max())
    z_vae = vae.codes()[(vae.n // 2) * vae.n + vae.n // 3]
    page.mouse.click(*ex.point("AE", "own", z_ae))
    pinned = ex.shown_z("AE", "pinned")
    page.mouse.move(*ex.point("AE", "own", [ae.low1 + ae.step, ae.high2 - ae.step]))  # away: the pinned panels must not follow the mouse
    ex.check("pinned", pinned, "own")
    assert ex.lattice_of("VAE", pinned) == "shared"
    assert not np.array_equal(_canvas_grey(page, ".variant[data-variant='AE'] .hover canvas"), ex.tile("AE", pinned))
    _toggle(page, "shared")  # the pin stays, now on the shared box in every panel
    ex.check("pinned", pinned, "shared")
    page.mouse.click(*ex.point("VAE", "shared", z_vae))
    pinned = ex.shown_z("VAE", "pinned")
    ex.check("pinned", pinned, "shared")
    page.mouse.move(*ex.point("AE", "shared", z_ae))
    ex.check("hover", ex.shown_z("AE", "hover"), "shared")
    _toggle(page, "own")
    ex.check("pinned", pinned, "own")
    page.mouse.move(*ex.point("VAE", "own", vae.codes()[(vae.n // 3) * vae.n + vae.n // 2]))
    ex.check("hover", ex.shown_z("VAE", "hover"), "own")
    shot = Path(SCREENSHOT or tmp_path) / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"explorer screenshot: {shot}")
