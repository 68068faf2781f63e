"""The Generative Deep Learning book's MNIST VAE in Keras 3 (TensorFlow backend): the peer `pyro-vae bench --book`
times beside the project's conv path. Written here from the book's published design (its models/VAE.py):
four 3x3 convolutions with 32-64-64-64 filters and strides 1-2-2-1 with LeakyReLU, a dense mean and
log-variance, z = mu + sigma * eps, a dense layer to 7x7x64 and the mirrored transposed convolutions
with a sigmoid output; loss r_loss_factor x the mean over pixels of the squared error plus the KL;
Adam(5e-4); `fit` with batch 32 and shuffling, as the book's notebooks train it.

It runs in a process of its own (`python -m pyro_vae.bench.keras_book IMAGES.npy THREADS SEED`):
TensorFlow fixes its thread pools when it starts, and torch's OpenMP and TensorFlow's pools should not
share a process. The process answers one line per request on stdin: `epoch` trains one epoch and prints
{"seconds": ..., "loss": ...} (the epoch's wall time measured inside the process, the mean loss per image);
`quit` ends it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import sys
import time

R_LOSS_FACTOR = 1000.0
LEARNING_RATE = 5e-4
BATCH_SIZE = 32
Z_DIM = 2


def build(seed: int):
    import keras
    from keras import layers, ops

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for filters, stride in ((32, 1), (64, 2), (64, 2), (64, 1)):
        h = layers.LeakyReLU()(layers.Conv2D(filters, 3, strides=stride, padding="same")(h))
    h = layers.Flatten()(h)
    encoder = keras.Model(inputs, [layers.Dense(Z_DIM)(h), layers.Dense(Z_DIM)(h)])
    code = keras.Input((Z_DIM,))
    h = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64)(code))
    for filters, stride in ((64, 1), (64, 2), (32, 2)):
        h = layers.LeakyReLU()(layers.Conv2DTranspose(filters, 3, strides=stride, padding="same")(h))
    decoder = keras.Model(code, layers.Activation("sigmoid")(layers.Conv2DTranspose(1, 3, padding="same")(h)))

    class BookVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.seeds = keras.random.SeedGenerator(seed)

        def call(self, x):
            mu, log_var = self.encoder(x)
            z = mu + ops.exp(0.5 * log_var) * keras.random.normal(ops.shape(mu), seed=self.seeds)
            reconstruction = R_LOSS_FACTOR * ops.mean(ops.square(x - self.decoder(z)), axis=(1, 2, 3))
            kl = -0.5 * ops.sum(1 + log_var - ops.square(mu) - ops.exp(log_var), axis=1)
            self.add_loss(ops.mean(reconstruction + kl))
            return z

    model = BookVAE()
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    return model


def serve(images_path: str, threads: int, seed: int) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    x = np.load(images_path).astype("float32").reshape(-1, 28, 28, 1)
    model = build(seed)
    out = sys.stdout
    print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": __import__("keras").__version__,
                      "images": len(x)}), file=out, flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == "quit":
            break
        if request != "epoch":
            print(json.dumps({"error": f"unknown request {request!r}"}), file=out, flush=True)
            continue
        started = time.perf_counter()
        history = model.fit(x, epochs=1, batch_size=BATCH_SIZE, shuffle=True, verbose=0)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "loss": float(history.history["loss"][-1])}), file=out, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
