"""`pyro-vae bench --book`: the book's VAE in pyro-vae, a plain-PyTorch loop and the book's Keras code.

No timing is asserted (the machine is shared): that the plain loop computes the project's loss for the
book's Normal likelihood (so the comparison is fair), that the item runs and reports every side, and that
the Keras peer, where installed, really trains (its loss falls)."""

import pytest
from loss_check import assert_reference_matches

from pyro_vae.bench.book import BOOK, KERAS_EXTRA, bench_book, book_config, keras_missing
from pyro_vae.bench.options import Options
from pyro_vae.bench.reference import Reference
from pyro_vae.bench.tables import format_table, table_rows
from pyro_vae.cli import main
from pyro_vae.data import load_data
from pyro_vae.errors import UserError
from pyro_vae.training.trainer import Trainer


def options(**overrides) -> Options:
    values = dict(device="cpu", threads=1, conv_images=64, repeats=2, quiet=True, book=True, book_threads=[1],
                  book_precisions=["float32"])
    values.update(overrides)
    return Options(**values).validate()


def test_plain_loop_computes_the_projects_book_loss(tmp_path):
    """Same weights, same grey batch, same noise: the hand-written 1000 x MSE + KL loss (with the Normal's
    constant) is the Pyro model's negative ELBO, and so are its gradients."""
    cfg = book_config(options(), 64, "float32")
    data = load_data(cfg)
    trainer = Trainer(cfg, tmp_path / "run", data, log=lambda m: None)
    reference = Reference(cfg, "mc", trainer.device)
    x = data.train_x[:32]
    assert 0 < float(x[(x > 0) & (x < 1)].numel())  # grey values, not binarised
    assert_reference_matches(trainer, reference, x, rel=1e-5, what="book")

def test_book_item_times_every_side_and_tabulates_them():
    result = bench_book(options(), lambda m: None)
    setting = result["threads"]["1"]
    sides = setting["sides"]
    expected = {"pyro-vae float32", "plain PyTorch"} | (set() if keras_missing() else {"keras"})
    assert set(sides) == expected
    for side in sides.values():
        assert len(side["epoch"]["values"]) == 2 and all(t > 0 for t in side["epoch"]["values"])
    assert sides["pyro-vae float32"]["over plain PyTorch"] == pytest.approx(
        sides["pyro-vae float32"]["epoch"]["median"] / sides["plain PyTorch"]["epoch"]["median"])
    assert setting["best"] == "pyro-vae float32"
    rows = table_rows({"book": result})
    text = format_table(rows)
    assert "book 1 thr: pyro-vae float32 epoch" in text and "book 1 thr: plain PyTorch epoch" in text
    if keras_missing():
        assert result["keras_skipped"] and KERAS_EXTRA in text and setting["met"] is None
    else:
        assert "x keras" in text and isinstance(setting["met"], bool)


@pytest.mark.skipif(keras_missing() is not None, reason=f"Keras 3 and TensorFlow are not installed ({KERAS_EXTRA})")
def test_keras_peer_is_the_books_vae_and_trains(tmp_path):
    from pyro_vae.bench.book import KerasWorker

    data = load_data(book_config(options(), 256, "float32"))
    worker = KerasWorker(data.train_x.numpy(), 1, 0, tmp_path)
    try:
        assert worker.info["images"] == 256 and worker.info["keras"].startswith("3.")
        losses = [worker.epoch()["loss"] for _ in range(3)]
    finally:
        worker.close()
    assert worker.process.returncode == 0
    # 1000 x MSE + KL per image: grey MNIST starts near 1000 x 0.1 and falls as the network learns.
    assert 20 < losses[-1] < losses[0] < 400


def test_book_options_are_checked(capsys):
    with pytest.raises(UserError, match="unknown precision"):
        options(book_precisions=["fp16"])
    with pytest.raises(UserError, match="--book-threads"):
        options(book_threads=[0])
    assert main(["bench", "--book", "--book-precisions", "half", "--variants", "", "--no-eval"]) == 2
    assert "unknown precision(s) 'half'" in capsys.readouterr().err
    assert BOOK["batch_size"] == 32 and BOOK["likelihood_options"] == {"r_loss_factor": 1000.0}
