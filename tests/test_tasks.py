"""The task specs (`artifacts.tasks`) and every layer's plug-in registry agree: each task has its
models, its training task, its data, its export comparison and its served route."""

from __future__ import annotations

import pytest

from easerve.artifacts.tasks import TASKS, task_spec
from easerve.export.parity import AGREEMENT_UNITS, COMPARISONS
from easerve.model_defs.registry import list_models
from easerve.service.app import ROUTERS
from easerve.service.dependencies import route_tasks
from easerve.training.datasets.sources import TARGETS_OF_SOURCE, generated_source, tasks_of_source
from easerve.training.tasks import TASK_TYPES


def test_each_task_has_bundled_ea_and_sa_models():
    for name in TASKS:
        bundled = {entry.attention for entry in list_models(task=name, bundled=True)}
        assert bundled == {"ea", "sa"}, name


def test_each_task_has_a_training_task_and_an_export_comparison():
    assert set(TASK_TYPES) == set(TASKS)
    answers = {spec.answer for spec in TASKS.values()}
    assert answers <= set(COMPARISONS)
    assert answers <= set(AGREEMENT_UNITS)


def test_each_task_has_generated_data_that_serves_it():
    for name in TASKS:
        assert name in tasks_of_source(generated_source(name))


def test_sources_name_the_tasks_their_samples_fit():
    assert tasks_of_source("voc") == ["segmentation"]
    assert set(tasks_of_source("shapenet-part")) == {"pointcloud-classification", "pointcloud-segmentation"}
    assert set(tasks_of_source("imagefolder")) == {"classification", "generation"}
    assert all(tasks_of_source(kind) for kind in TARGETS_OF_SOURCE)


def test_each_task_is_served_at_its_specs_path():
    assert route_tasks(ROUTERS) == {spec.path: spec.name for spec in TASKS.values()}


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="known: classification"):
        task_spec("instance-painting")


def test_endpoint_names_come_from_the_path():
    assert [spec.endpoint for spec in TASKS.values()] == [
        "classify",
        "detect",
        "segment",
        "generate",
        "pointcloud-classify",
        "pointcloud-segment",
        "segment-instances",
    ]
