"""`easerve serve --http-workers N`: N HTTP worker processes in front of one model process.

The `easerve serve` process is the model process: it holds the runners and one `DynamicBatcher`
per model, exactly as with one worker, and serves them to the workers over a Unix socket
(`model_host`). Its `supervisor` binds the listening socket once and starts the workers
(`worker`), which all accept on it; each runs the very app `easerve serve` runs (`create_app`),
whose batchers are stand-ins (`shared_batcher`) that write a request's tensors into the worker's
shared-memory arena (`arena`) and send a small header (`wire`) to the model process. So decoding
scales with the workers while every request of a model meets in one queue.
"""
