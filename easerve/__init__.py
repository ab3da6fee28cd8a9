"""easerve: train, export and serve External Attention vision models."""

__version__ = "0.1.0"
