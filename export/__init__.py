"""Export: checkpoints -> ONNX (+ INT8 / FP16 variants, TensorRT engines, a Triton repository)
and the manifest the service reads. Everything downstream of `weights/` needs no model code."""
