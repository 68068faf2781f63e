"""explorer.html: the code spaces of a study's 2-D variants, to be looked into with the mouse.

For each 2-D variant (the report's seed) the page shows its test codes coloured by class and, for
the point under the mouse, the image every variant decodes there, the distance from that point to
the nearest training code, and the sample-quality classifier's label and confidence for the decode:
points in the holes of an AE's code space decode to poor images, the VAE's space has none. A click
pins the point (a code z) in every variant at once.

Each panel is zoomed to its own box, a square fitted to that variant's codes (own_lattice: the
middle 99% of them on each axis, with a margin), so a VAE's compact code space is not lost in a
corner beside an AE's sprawl; its caption gives the box (z1 ∈ [..], z2 ∈ [..]) and its axes carry
ticks. One click on the page's toggle puts every panel on the shared box instead (shared_lattice:
one square centred on 0 holding every own box and the N(0, I) bulk, the same code at the same place
in every panel, each own box dashed on it), and back. On load each panel already shows a decode (at
the centre of its codes) and a pin (at the centre of the first variant's codes), so nothing is
black before the first hover. A code beyond a panel's box is marked, dashed, at its edge.

Nothing is computed in the browser. Each variant carries two lattices of precomputed decodes (one
grey-level PNG sprite sheet each, with the decodes' classifier labels and nearest-training-code
distances): GRID x GRID cells over its own box, and SHARED_GRID x SHARED_GRID over the shared box.
A code is decoded from the own lattice wherever it lies in the variant's own box, in either view (so
a pinned code shows the same decode in both), and from the shared lattice only outside it (a point
among another variant's codes; the panel says so). That is all the shared lattice is used for, so
it is coarse, a quarter of the cells. Against one 96 x 96 lattice over the shared box, as before,
the test study of tests/report/test_explorer.py went from 1.40 to 1.35 MB (2.15 MB with a 96 x 96
shared lattice), a better-trained 2-D AE and VAE (8 epochs on 6,000 MNIST images) from 1.22 to
1.79 MB (2.48 MB). The codes and lattices are
embedded in one self-contained file (no network); the same runs give the same bytes.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from pyro_vae.data import BINARIZATIONS, DATASETS
from pyro_vae.evaluation.evaluate import EVALUATION_ARRAYS, Scorer
from pyro_vae.io import atomic_write_bytes
from pyro_vae.report.tables import counted
from pyro_vae.study.spec import Study
from pyro_vae.training import runs
from pyro_vae.training.runs import load_run

FILE = "explorer.html"
GRID = 96  # cells a side of each variant's own lattice
SHARED_GRID = 48  # ... and of its shared one, used only outside its own box: see the module docstring
TILE = 28
MAX_POINTS = 3000  # test codes drawn per variant (a seeded subset beyond that)
LEVELS = 32  # grey levels of the sprite sheets: fewer symbols compress far better, and 32 look smooth
ROBUST = (0.5, 99.5)  # the percentiles of the codes a box must hold on each axis
OWN_MARGIN = 1.1  # an own box's half-width over the half-range of the codes it is fitted to
PRIOR_REACH = 3.0  # the shared box holds at least [-3, 3]^2, the N(0, I) bulk
TEMPLATE = Path(__file__).with_name("explorer_page.html")


@dataclass(frozen=True)
class Lattice:
    """n x n cells over the square box [low1, low1 + side] x [low2, low2 + side]; row 0 is the top
    (highest z2), column 0 the left (lowest z1)."""

    low1: float
    low2: float
    side: float
    n: int = GRID

    @property
    def step(self) -> float:
        return self.side / self.n

    @property
    def high1(self) -> float:
        return self.low1 + self.side

    @property
    def high2(self) -> float:
        return self.low2 + self.side

    def codes(self) -> np.ndarray:
        """Cell centres (n * n, 2), row-major from the top-left cell."""
        offsets = (np.arange(self.n) + 0.5) * self.step
        z1, z2 = np.meshgrid(self.low1 + offsets, (self.low2 + offsets)[::-1])
        return np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32)

    def _raw_cell(self, z: np.ndarray) -> tuple[int, int]:
        return math.floor((self.high2 - float(z[1])) / self.step), math.floor((float(z[0]) - self.low1) / self.step)

    def contains(self, z: np.ndarray) -> bool:
        """Whether code z lies in one of the cells (the page decides it the same way)."""
        return all(0 <= i < self.n for i in self._raw_cell(z))

    def cell(self, z: np.ndarray) -> tuple[int, int]:
        """(row, column) of the cell holding code z (the nearest edge cell for a code outside)."""
        return tuple(int(np.clip(i, 0, self.n - 1)) for i in self._raw_cell(z))

    def box(self) -> dict:
        """The lattice as the page reads it."""
        return {"low": [self.low1, self.low2], "side": self.side, "n": self.n}


def _up(x: float) -> float:
    """x rounded up to the hundredth: boxes with short captions that say them exactly."""
    return math.ceil(round(x * 100, 6)) / 100


def own_lattice(codes: np.ndarray, n: int = GRID) -> Lattice:
    """A square box fitted to one variant's codes: centred on the middle of the middle 99% of them on
    each axis, its half-width that of the wider axis' range times OWN_MARGIN (at least 0.05)."""
    lo, hi = np.percentile(codes, ROBUST, axis=0)
    centre = np.round((lo + hi) / 2, 2)
    half = max(0.05, _up(float(np.max(np.maximum(hi - centre, centre - lo))) * OWN_MARGIN))
    return Lattice(round(float(centre[0]) - half, 2), round(float(centre[1]) - half, 2), round(2 * half, 2), n)


def shared_lattice(owns: list[Lattice], n: int = SHARED_GRID) -> Lattice:
    """One square box for every variant, centred on 0: it holds every own box (so a point under the
    mouse anywhere is on it) and at least the N(0, I) bulk."""
    reach = _up(max(PRIOR_REACH, *(max(abs(b.low1), abs(b.low2), abs(b.high1), abs(b.high2)) for b in owns)))
    return Lattice(-reach, -reach, round(2 * reach, 2), n)


def quantize(images: np.ndarray) -> np.ndarray:
    """Bernoulli means in [0, 1] -> the uint8 grey values the sprite sheets hold."""
    level = np.rint(np.clip(images, 0, 1) * (LEVELS - 1))
    return np.rint(level * 255 / (LEVELS - 1)).astype(np.uint8)


def sprite_sheet(images: np.ndarray, n: int) -> bytes:
    """(n * n, 784) decodes of the lattice -> one (28 n) x (28 n) PNG, laid out pixel-major: pixel
    (y, x) of cell (row, col) sits at (y * n + row, x * n + col). Each n x n block is then one pixel
    over the smooth code space, which compresses about 5 times better than side-by-side tiles."""
    from PIL import Image

    tiles = quantize(images).reshape(n, n, TILE, TILE).transpose(2, 0, 3, 1).reshape(TILE * n, TILE * n)
    buffer = io.BytesIO()
    Image.fromarray(tiles, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def sheet_tile(sheet: np.ndarray, n: int, row: int, col: int) -> np.ndarray:
    """The (28, 28) decode of cell (row, col) in a decoded sprite sheet (the inverse of sprite_sheet)."""
    return sheet[row::n, col::n][:TILE, :TILE]


def _lattice_payload(run, lattice: Lattice, scorer: Scorer, train_codes: cKDTree) -> dict:
    """One lattice of one variant: its box, the sprite sheet of its decodes, their classifier labels
    and confidences, and each cell centre's distance to the nearest training code."""
    grid_codes = lattice.codes()
    decodes = run.decode(torch.from_numpy(grid_codes))
    with torch.no_grad():
        probs = torch.softmax(scorer.classifier(decodes), dim=1)
    confidence, label = probs.max(1)
    distance, _ = train_codes.query(grid_codes)
    return {
        **lattice.box(), "sheet": "data:image/png;base64," + base64.b64encode(sprite_sheet(decodes.numpy(), lattice.n)).decode(),
        "label": label.tolist(), "confidence": np.rint(confidence.numpy() * 100).astype(int).tolist(),
        "distance": np.round(distance, 2).tolist(),
    }


def _variant_payload(name: str, run_dir: Path, own: Lattice, shared: Lattice, scorer: Scorer, train_x: torch.Tensor,
                     gen: np.random.Generator) -> dict:
    run = load_run(run_dir)
    arrays = np.load(run_dir / EVALUATION_ARRAYS)
    codes, labels = arrays["codes"], arrays["labels"]
    shown = gen.permutation(len(codes))[:MAX_POINTS]
    train_codes, _ = run.encode(BINARIZATIONS[run.config.binarize].test(train_x, run.config.seed))
    tree = cKDTree(train_codes.numpy())
    return {
        "name": name, "codes": np.round(codes[shown], 3).tolist(), "labels": labels[shown].astype(int).tolist(),
        "own": _lattice_payload(run, own, scorer, tree), "shared": _lattice_payload(run, shared, scorer, tree),
    }


def explorer_runs(study: Study, runs_dir: Path, seed: int) -> dict[str, Path]:
    """The 2-D variants' run folders of `seed`, in the study's order: those on the first one's dataset
    (the page has one classifier and one set of class names)."""
    found, first = {}, None
    for variant in study.variants:
        run = study.run_dir(runs_dir, variant, seed)
        finished = runs.is_complete(run) and (run / EVALUATION_ARRAYS).exists()  # a partial study's gaps are left out
        if finished and np.load(run / EVALUATION_ARRAYS)["codes"].shape[1] == 2:
            dataset = runs.read_config(run)[0].dataset
            first = first or dataset
            if dataset == first:
                found[variant] = run
    return found


def write_explorer(study: Study, runs_dir: str | Path, out_dir: str | Path, log: Callable[[str], None], grid: int = GRID) -> Path | None:
    """Write out_dir/explorer.html for the study's 2-D variants (None when it has none)."""
    seed = study.seeds[0]
    chosen = explorer_runs(study, Path(runs_dir), seed)
    if not chosen:
        return None
    shared_grid = max(1, grid * SHARED_GRID // GRID)
    log(f"report: code-space explorer of {counted(len(chosen), '2-D variant')}, {grid} x {grid} decodes each over its "
        f"own box and {shared_grid} x {shared_grid} over the shared one")
    owns = [own_lattice(np.load(r / EVALUATION_ARRAYS)["codes"], grid) for r in chosen.values()]
    shared = shared_lattice(owns, shared_grid)
    first = load_run(next(iter(chosen.values())))
    data = first.data()  # variants share the dataset and split
    scorer = Scorer(data, first.config.dataset, log)
    gen = np.random.default_rng(0)
    payload = {
        "title": study.title, "seed": seed, "tile": TILE,
        "classes": [str(c) for c in DATASETS[first.config.dataset].class_names],
        "variants": [_variant_payload(v, r, own, shared, scorer, data.train_x, gen) for (v, r), own in zip(chosen.items(), owns)],
    }
    page = TEMPLATE.read_text().replace("__TITLE__", _escape(study.title)).replace(
        "__DATA__", json.dumps(payload, separators=(",", ":")).replace("</", "<\\/"))
    path = Path(out_dir) / FILE
    atomic_write_bytes(path, page.encode("utf-8"))
    log(f"report: {FILE} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


def _escape(text: str) -> str:
    import html

    return html.escape(text)
