"""easerve as a Ray Serve application: the same HTTP API over many processes and machines.

Needs `ray[serve]` (`pip install easerve[ray]`); the plain service never imports this package.

- `app`: the application builder (`serve run easerve.service.ray_serve.app:app`, or
  `...app:build_app` with arguments, or `import_path` in a `serve deploy` config);
- `deployments`: the ingress deployment (easerve's FastAPI app: routing, decoding, validation,
  limits, API key, answers) and one model deployment per served model (runners and easerve's own
  dynamic batcher in every replica), with the remote batcher that joins them;
- `config`: the Ray options of each model deployment (replicas, autoscaling, CPUs, GPUs) from
  the settings, the model's `ray.json` and `--model-config NAME:KEY=VALUE`;
- `launch`: `easerve serve --engine ray`, which starts (or joins) a cluster and runs the app.

See docs/scale-out.md.
"""
