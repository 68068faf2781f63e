"""explorer.html: the code spaces of a study's 2-D variants, to be looked into with the mouse.

For each 2-D variant (the report's seed) the page shows its test codes coloured by class and, for
the point under the mouse, the image every variant decodes there, the distance from that point to
the nearest training code, and the sample-quality classifier's label and confidence for the decode:
points in the holes of an AE's code space decode to poor images, the VAE's space has none. A click
pins the point in every variant at once.

Nothing is computed in the browser: the decodes of a GRID x GRID lattice over one shared, square
code box are precomputed from each run's checkpoint (one grey-level PNG sprite sheet per variant),
with their classifier labels and nearest-training-code distances, and embedded with the codes in
one self-contained file (no network).
"""

from __future__ import annotations

import base64
import io
import json
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
GRID = 96
TILE = 28
MAX_POINTS = 3000  # test codes drawn per variant (a seeded subset beyond that)
LEVELS = 32  # grey levels of the sprite sheets: fewer symbols compress far better, and 32 look smooth
TEMPLATE = Path(__file__).with_name("explorer_page.html")


@dataclass(frozen=True)
class Lattice:
    """GRID x GRID cells over the square box [low, high]^2; row 0 is the top (highest z2)."""

    low: float
    high: float
    n: int = GRID

    @property
    def step(self) -> float:
        return (self.high - self.low) / self.n

    def codes(self) -> np.ndarray:
        """Cell centres (n * n, 2), row-major from the top-left cell."""
        centres = self.low + (np.arange(self.n) + 0.5) * self.step
        z1, z2 = np.meshgrid(centres, centres[::-1])
        return np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32)

    def cell(self, z: np.ndarray) -> tuple[int, int]:
        """(row, column) of the cell holding code z."""
        col = int(np.clip((z[0] - self.low) // self.step, 0, self.n - 1))
        row = int(np.clip((self.high - z[1]) // self.step, 0, self.n - 1))
        return row, col


def lattice_for(code_sets: list[np.ndarray], n: int = GRID) -> Lattice:
    """One square box for every variant (so a pinned point is the same code everywhere), covering
    the middle 99% of each variant's codes with a 5% margin, and at least the N(0, I) bulk."""
    reach = max(3.0, *(float(np.abs(np.percentile(c, [0.5, 99.5], axis=0)).max()) for c in code_sets)) * 1.05
    return Lattice(-reach, reach, n)


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


def _variant_payload(name: str, run_dir: Path, lattice: Lattice, scorer: Scorer, train_x: torch.Tensor, gen: np.random.Generator) -> dict:
    run = load_run(run_dir)
    arrays = np.load(run_dir / EVALUATION_ARRAYS)
    codes, labels = arrays["codes"], arrays["labels"]
    shown = gen.permutation(len(codes))[:MAX_POINTS]
    grid_codes = lattice.codes()
    decodes = run.decode(torch.from_numpy(grid_codes))
    with torch.no_grad():
        probs = torch.softmax(scorer.classifier(decodes), dim=1)
    confidence, label = probs.max(1)
    train_codes, _ = run.encode(BINARIZATIONS[run.config.binarize].test(train_x, run.config.seed))
    distance, _ = cKDTree(train_codes.numpy()).query(grid_codes)
    return {
        "name": name, "sheet": "data:image/png;base64," + base64.b64encode(sprite_sheet(decodes.numpy(), lattice.n)).decode(),
        "codes": np.round(codes[shown], 3).tolist(), "labels": labels[shown].astype(int).tolist(),
        "label": label.tolist(), "confidence": np.rint(confidence.numpy() * 100).astype(int).tolist(),
        "distance": np.round(distance, 2).tolist(),
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
    log(f"report: code-space explorer of {counted(len(chosen), '2-D variant')}, {grid} x {grid} decodes each")
    lattice = lattice_for([np.load(r / EVALUATION_ARRAYS)["codes"] for r in chosen.values()], grid)
    first = load_run(next(iter(chosen.values())))
    data = first.data()  # variants share the dataset and split
    scorer = Scorer(data, first.config.dataset, log)
    gen = np.random.default_rng(0)
    payload = {
        "title": study.title, "seed": seed, "low": lattice.low, "high": lattice.high, "n": lattice.n, "tile": TILE,
        "classes": [str(c) for c in DATASETS[first.config.dataset].class_names],
        "variants": [_variant_payload(v, r, lattice, scorer, data.train_x, gen) for v, r in chosen.items()],
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
