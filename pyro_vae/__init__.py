"""pyro-vae: variational autoencoders as Pyro programs, and studies that compare them."""

__version__ = "0.1.0"
