"""What the routes share, held on `app.state.service` and reached through `dependencies`."""

from __future__ import annotations

from dataclasses import dataclass

from easerve.service.admission import MemoryBudget, WorkerPools
from easerve.service.lifecycle import ServiceLifecycle
from easerve.service.metrics import ServiceMetrics
from easerve.service.model_control import ModelControl
from easerve.service.repository import ModelRepository
from easerve.service.runners.selection import BackendChoice
from easerve.service.scheduler.device import DeviceScheduler
from easerve.service.settings import Settings


@dataclass(frozen=True)
class ServiceState:
    settings: Settings
    repository: ModelRepository
    lifecycle: ServiceLifecycle
    metrics: ServiceMetrics
    pools: WorkerPools  # decoding, pre- and post-processing, off the event loop
    budget: MemoryBudget  # estimated working memory of the requests in flight
    backend: BackendChoice
    control: ModelControl  # loading, reloading and unloading models at run time
    scheduler: DeviceScheduler  # which model's batch runs next on this process's device
