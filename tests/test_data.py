import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SLICE_DATASET

from pyro_vae import data
from pyro_vae.errors import DataError


def _copy_raw(src_root: Path, dst_root: Path, name: str = "FashionMNIST", decompress: bool = False) -> Path:
    raw = dst_root / name / "raw"
    raw.mkdir(parents=True)
    for f in (src_root / name / "raw").iterdir():
        if decompress:
            with gzip.open(f) as g:
                (raw / f.stem).write_bytes(g.read())
        else:
            shutil.copy(f, raw / f.name)
    return raw


@pytest.mark.full_data
def test_fashion_mnist_official_split(data_root):
    d = data.load("fashion-mnist", data_root)
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.train_x.dtype == torch.float32 and 0 <= d.train_x.min() and d.train_x.max() == 1
    assert torch.bincount(d.train_y).tolist() == [6000] * 10
    assert d.split_indices is None and d.provenance["origin"] == "--data-dir"
    assert len(d.provenance["train_file"]["images_sha256"]) == 64


@pytest.mark.full_data
def test_full_mnist_loads_the_official_split(data_root):
    d = data.load("mnist", data_root)
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert torch.bincount(d.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.split_indices is None and d.provenance["split"] == "official train/test files"


def test_mnist_carves_a_stratified_deterministic_split(test_split_only_root):
    a = data.load("mnist", test_split_only_root)
    b = data.load("mnist", test_split_only_root)
    assert (len(a.train_x), len(a.test_x)) == (8000, 2000)
    train, test = set(a.split_indices["train"]), set(a.split_indices["test"])
    assert not train & test and train | test == set(range(10000))
    assert a.split_indices == b.split_indices
    # each class gives 20% of its images to test
    full = torch.bincount(torch.cat([a.train_y, a.test_y]))
    assert (torch.bincount(a.test_y) - 0.2 * full).abs().max() <= 1
    assert "carved" in a.provenance["split"]
    other = data.load("mnist", test_split_only_root, split_seed=1)
    assert other.split_indices != a.split_indices


def test_limits_keep_a_seeded_subset(test_split_only_root):
    d = data.load("mnist", test_split_only_root, train_limit=300, test_limit=100)
    assert (len(d.train_x), len(d.test_x)) == (300, 100)
    assert len(d.split_indices["train"]) == 300
    full = data.load("mnist", test_split_only_root)
    first = d.split_indices["train"][0]
    assert torch.equal(d.train_x[0], full.train_x[full.split_indices["train"].index(first)])


def test_limits_on_the_official_split_keep_a_seeded_subset(official_split_root):
    d = data.load("mnist", official_split_root, train_limit=300, test_limit=100)
    again = data.load("mnist", official_split_root, train_limit=300, test_limit=100)
    other = data.load("mnist", official_split_root, train_limit=300, test_limit=100, split_seed=1)
    assert d.provenance["split"] == "official train/test files"
    assert (len(d.train_x), len(d.test_x)) == (300, 100) and d.split_indices is None
    assert torch.equal(d.train_x, again.train_x) and not torch.equal(d.train_x, other.train_x)
    assert len(torch.unique(d.train_y)) == 10


def test_decompressed_and_gzipped_files_agree(data_root, tmp_path):
    _copy_raw(data_root, tmp_path, "MNIST", decompress=True)
    plain = data.load("mnist", tmp_path)
    gz = data.load("mnist", data_root)
    assert torch.equal(plain.train_x, gz.train_x) and torch.equal(plain.test_y, gz.test_y)


def test_gzip_files_are_decompressed_into_the_cache_not_the_data_folder(data_root, tmp_path):
    raw = _copy_raw(data_root, tmp_path, "MNIST")
    before = sorted(p.name for p in raw.iterdir())
    data.load("mnist", tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == before
    assert list((data.cache_dir() / "idx").rglob("t10k-images-idx3-ubyte"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(p.read_bytes())[4:])), "magic number"),
        (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-1000])), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:5000]), "not a readable gzip"),
        (lambda p: p.write_bytes(b"this is not gzip at all" * 10), "not a readable gzip"),
    ],
    ids=["wrong-magic", "truncated-idx", "truncated-gzip", "not-gzip"],
)
def test_bad_image_files_are_refused_clearly(data_root, tmp_path, damage, message):
    raw = _copy_raw(data_root, tmp_path, "MNIST")
    damage(raw / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=message) as e:
        data.load("mnist", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "\n" not in str(e.value)


def test_image_label_count_mismatch(data_root, tmp_path):
    raw = _copy_raw(data_root, tmp_path, "MNIST")
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    body = gzip.decompress(labels.read_bytes())
    fewer = (9000).to_bytes(4, "big")
    labels.write_bytes(gzip.compress(body[:4] + fewer + body[8 : 8 + 9000]))
    with pytest.raises(DataError, match="10000 images but .* 9000 labels"):
        data.load("mnist", tmp_path)


def test_missing_files_say_where_we_looked(tmp_path):
    with pytest.raises(DataError) as e:
        data.load("fashion-mnist", tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(e.value) and "--data-dir" in str(e.value)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        data.load("mnist", tmp_path)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError.__mro__[1], match="choose one of: mnist, fashion-mnist"):
        data.load("cifar")


def test_offline_download_falls_back_to_the_embedded_mnist(monkeypatch, tmp_path):
    """The real torchvision download, which fails here (no internet): MNIST falls back, loudly."""
    monkeypatch.delenv("PYRO_VAE_DATA")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    monkeypatch.setenv(data.FAILED_DOWNLOADS_ENV, "")  # restored afterwards: the failure is handed down through it
    data._FAILED_DOWNLOADS.clear()
    notes = []
    try:
        raw, origin = data.locate("mnist", notify=notes.append)
    except Exception as e:  # pragma: no cover - only on a machine with internet
        pytest.fail(f"locate raised {e!r}")
    if origin == "download":  # pragma: no cover - a machine with internet
        assert (raw / "train-images-idx3-ubyte").exists()
        return
    assert origin == "embedded" and raw == data.EMBEDDED_ROOT / "MNIST" / "raw"
    assert notes and "download of mnist failed" in notes[0] and "shipped with pyro-vae" in notes[0]
    assert ".gz:)" not in notes[0]  # the reason, which torchvision puts on a later line, is given
    d = data.load("mnist", notify=notes.append)
    assert d.provenance["origin"] == "embedded" and "shipped" in d.provenance["note"]
    assert len(d.train_x) == 8000
    assert len(notes) == 1  # said once in this process
    # A process this one starts (a study's worker) inherits the failure: no second try, no second notice.
    child = subprocess.run([sys.executable, "-c", "from pyro_vae import data; print(data.locate('mnist')[1])"],
                           capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == "embedded" and "download" not in child.stderr, child.stderr


def test_offline_download_of_fashion_mnist_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("PYRO_VAE_DATA")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))

    def offline(spec, root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got: no network")

    with pytest.raises(DataError, match=r"download failed \(Error downloading .*: no network\); .*PYRO_VAE_DATA"):
        data.locate("fashion-mnist", download=offline)


def test_download_failure_reason_reads_torchvision_later_lines():
    message = ("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n<urlopen error [Errno -2] Name or "
               "service not known>\nTried http://b/, got:\n<urlopen error [Errno -2] Name or service not known>\n")
    assert data.download_failure_reason(RuntimeError(message)) == (
        "Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -2] Name or service not known>")
    assert data.download_failure_reason(RuntimeError("")) == "RuntimeError"


def test_download_fills_the_cache(monkeypatch, tmp_path, data_root):
    monkeypatch.delenv("PYRO_VAE_DATA")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    calls = []

    def fake_download(spec, root):  # what torchvision leaves behind: decompressed files in raw/
        calls.append((spec.torchvision_class, root))
        _copy_raw(data_root, root, spec.folder, decompress=True)

    raw, origin = data.locate(SLICE_DATASET, download=fake_download)
    assert origin == "download" and calls == [(data.DATASETS[SLICE_DATASET].torchvision_class, tmp_path / "data")]
    assert raw == tmp_path / "data" / data.DATASETS[SLICE_DATASET].folder / "raw"
    raw, origin = data.locate(SLICE_DATASET, download=fake_download)
    assert origin == "cache" and len(calls) == 1


def test_binarisations():
    x = torch.rand(200, 784)
    dyn = data.BINARIZATIONS["dynamic"]
    e1, e1_again, e2 = dyn.train(x, 0, 1), dyn.train(x, 0, 1), dyn.train(x, 0, 2)
    assert set(e1.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(e1, e1_again) and not torch.equal(e1, e2)
    assert abs(e1.mean() - x.mean()) < 0.01
    fixed = data.BINARIZATIONS["fixed"]
    assert torch.equal(fixed.train(x, 3, 1), fixed.train(x, 3, 7))
    assert torch.equal(data.BINARIZATIONS["none"].train(x, 0, 1), x)
    assert not torch.equal(dyn.test(x, 0), e1)


def test_dynamic_binarisation_is_an_exact_bernoulli_per_pixel():
    """Every grey level 0..255 as a pixel, drawn 4,000 times: each pixel's frequency of ones matches
    level/255 within 5 binomial standard deviations (an off-by-one sampler, level/256, is outside
    that bound at the top levels: 255 * 4000 / 256 is 15.6 ones short of 4000, the bound is 0)."""
    levels = torch.arange(256, dtype=torch.float32) / 255
    x = levels.repeat(4000, 1)
    ones = data.BINARIZATIONS["dynamic"].train(x, 3, 1).sum(0)
    p = levels.double()
    expected, sd = 4000 * p, (4000 * p * (1 - p)).sqrt()
    assert ((ones.double() - expected).abs() <= 5 * sd + 1e-9).all()
    assert ones[0] == 0 and ones[255] == 4000


def test_dynamic_binarisation_draws_of_different_epochs_are_independent():
    p = 128 / 255
    x = torch.full((2000, 784), p)
    dyn = data.BINARIZATIONS["dynamic"]
    a, b = dyn.train(x, 0, 1).flatten(), dyn.train(x, 0, 2).flatten()
    # Under independence P(a=1, b=1) = p^2; with n = 1.57M draws its sd is 0.00035.
    assert abs(float((a * b).mean()) - p * p) < 0.0015
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.005
    # and of different seeds, same epoch
    c = dyn.train(x, 1, 1).flatten()
    assert abs(float((a * c).mean()) - p * p) < 0.0015


def test_binarisation_keeps_shape_dtype_and_device_and_is_reproducible():
    x = torch.rand(37, 784)
    for name in ("dynamic", "fixed"):
        b = data.BINARIZATIONS[name]
        out = b.train(x, 5, 2)
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.equal(out, b.train(x, 5, 2))
        assert torch.equal(b.test(x, 5), b.test(x, 5)) and set(out.unique().tolist()) <= {0.0, 1.0}


def test_drawing_the_next_epoch_ahead_changes_no_number(tmp_path):
    """Training draws epoch e+1's binarisation while epoch e runs; the result must equal a draw made
    on the spot, so a run's numbers do not depend on the thread."""
    from conftest import small_config

    from pyro_vae.training.trainer import Trainer

    cfg = small_config(epochs=3)
    trainer = Trainer(cfg, tmp_path, data.load_data(cfg), log=lambda m: None)
    first, order = trainer.inputs(1)
    assert trainer.inputs.ahead is not None and trainer.inputs.ahead[0] == 2
    second, _ = trainer.inputs(2)
    assert torch.equal(second, trainer.binarization.train(trainer.train_x, cfg.seed, 2))
    assert not torch.equal(first, second) and sorted(order.tolist()) == list(range(len(trainer.train_x)))
    trainer.inputs(3)
    assert trainer.inputs.ahead is None  # nothing is drawn past the last epoch


def test_a_dead_writers_temporary_file_in_the_cache_is_swept(monkeypatch, tmp_path):
    """A process killed while writing a cached decompression leaves `.NAME.XXXX.tmp` (tens of MB);
    the next use of that cache folder removes it once it is old enough to be a dead writer's, and
    leaves a fresh one (a live writer's) alone."""
    import os
    import time

    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    folder = data.cache_subdir("idx")
    stale, fresh = folder / ".train-images-idx3-ubyte.ab12cd.tmp", folder / ".t10k-images-idx3-ubyte.ef34gh.tmp"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    old = time.time() - data.STALE_TEMPORARY_SECONDS - 60
    os.utime(stale, (old, old))
    assert data.cache_subdir("idx") == folder
    assert not stale.exists() and fresh.exists()
