"""The inference service: exported models (manifest + ONNX) behind a batching REST API.

Nothing here imports torch (except `service.runners.torch_reference`, lazily, when chosen),
nor `training` or `export`: a manifest and a model file are all the service needs.
"""
