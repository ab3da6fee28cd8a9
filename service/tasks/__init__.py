"""Pre- and post-processing per task: client input -> model tensors -> answers (pure functions,
run on the worker threads)."""
