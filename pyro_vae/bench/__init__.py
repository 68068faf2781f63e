"""`pyro-vae bench`: how fast the toolkit runs, measured side by side in one process.

A study is many runs, so the time per run is the toolkit's capacity. The bench measures, in one
process and one invocation (so that ratios hold on a noisy, shared machine):

1. train (`throughput`): epoch time and images/s of the project's training path,
   `Trainer.train_epoch` (what `pyro-vae train` and studies run), against a plain-PyTorch loop
   (`reference`) with the identical networks (same initial weights), batch size, optimiser and
   in-memory data (same per-epoch binarisation and order), for each variant in `options.VARIANTS`.
2. batching (`batching`): the share of the project's epoch spent getting batches (per-epoch
   binarisation plus one epoch of index gathers), and a torch DataLoader for comparison.
3. eval (`likelihood`): log p(x) of the test images by importance sampling and by the exact 2-D
   grid, their times, and the decoder-arithmetic floor of importance sampling.
4. study (`study`, opt-in with --study): wall time and peak memory of a whole study, as a child.

`options` defines the flags once, `targets` the issue's targets, `timers` the clocks, `tables` the
report's text; `run.main` drives them. The report is a table on stdout and, with --json FILE, the
full numbers.
"""

from pyro_vae.bench.options import add_arguments
from pyro_vae.bench.run import main

__all__ = ["add_arguments", "main"]
