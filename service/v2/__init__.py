"""The Open Inference Protocol v2 (KServe / Triton REST), with Triton's binary tensor extension."""
