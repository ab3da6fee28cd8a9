"""Runners: a loaded model behind one `run(inputs) -> outputs` call, per backend."""
