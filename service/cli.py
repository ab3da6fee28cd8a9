"""`easerve serve`: serve exported models over REST (no torch needed).

Every flag overrides the matching `EASERVE_*` environment variable (see `service.settings`);
the API key is only read from `EASERVE_API_KEY`, so it never shows in the process list.
Exit status: 0 after a clean (drained) shutdown, 1 if a model failed to load or the server
could not start, 2 for invalid settings or missing models (or `--engine ray` without Ray).
`--engine ray` runs the same API as a Ray Serve application (`service.ray_serve.launch`);
`--http-workers N` runs it in N HTTP worker processes in front of this one (`service.frontend`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from easerve.service.settings import Settings

# The process id tells the HTTP workers of `--http-workers` (and the model process) apart.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `easerve serve`'s flags: one per setting, generated from `Settings`."""
    from easerve.service.settings_cli import add_settings_arguments

    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Build the settings from the environment and flags, load the models, serve until SIGTERM."""
    import logging

    from pydantic import ValidationError

    from easerve.service.app import create_app
    from easerve.service.collector import freeze_startup_objects
    from easerve.service.model_config import ModelConfigError
    from easerve.service.model_files import ModelFilesError
    from easerve.service.server import DrainingServer, create_server
    from easerve.service.settings import Settings
    from easerve.service.settings_cli import settings_overrides

    try:
        settings = Settings(**settings_overrides(args))
    except ValidationError as error:
        print(f"easerve serve: invalid settings:\n{error}")
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if settings.http_workers > 1:
        from easerve.service.frontend.supervisor import serve_with_workers

        return serve_with_workers(settings, LOG_FORMAT)
    if settings.engine == "ray":
        return _serve_on_ray(settings)
    server: DrainingServer | None = None

    def stop_on_load_failure(reason: str) -> None:
        if server is not None:
            server.stop()

    try:
        app = create_app(settings, on_load_failure=stop_on_load_failure)
    except (ModelFilesError, ModelConfigError) as error:
        logging.getLogger("easerve").error("%s", error)
        return 2
    lifecycle = app.state.service.lifecycle
    server = create_server(app, settings)
    freeze_startup_objects()
    server.run()
    if not server.started or lifecycle.error:
        return 1
    return 0


def _serve_on_ray(settings: Settings) -> int:
    """`--engine ray`: the Ray Serve application (`service.ray_serve`), imported only now, so
    that `easerve serve` needs no Ray."""
    try:
        from easerve.service.ray_serve.launch import serve_on_ray
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "ray":
            raise
        print("easerve serve --engine ray: Ray Serve is not installed; pip install 'easerve[ray]'")
        return 2
    return serve_on_ray(settings)
