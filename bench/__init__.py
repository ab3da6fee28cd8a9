"""Benchmarks behind `easerve bench`: one module per benchmark, each with `add_arguments`/`run`."""
