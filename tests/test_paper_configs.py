"""The paper-size registry entries: parameter counts, and every entry's name and twin.

Paper-size models are built on the meta device (shapes only, no memory, no compute).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from easerve.model_defs.attention import ATTENTION_KINDS
from easerve.model_defs.registry import ModelEntry, get_model_entry, list_models, twin_of
from easerve.model_defs.summary import count_parameters

# torchvision's resnet101 has 44,549,160 parameters; its 1000-class fc layer 2048 * 1000 + 1000.
RESNET101_WITHOUT_FC = 44_549_160 - 2_049_000
NAME_PATTERN = re.compile(rf"^(?P<arch>[a-z0-9]+)-(?P<attn>{'|'.join(ATTENTION_KINDS)})-(?P<size>[a-z0-9]+)$")


def _ids(entries: list[ModelEntry]) -> list[str]:
    return [e.name for e in entries]


@pytest.mark.parametrize(
    ("name", "paper_params"),
    [("eamlp-ea-7", 6.10e6), ("eamlp-ea-14", 29.80e6), ("eamlp-ea-19", 54.47e6)],
)
def test_eamlp_paper_configs_match_the_paper_parameter_counts(name: str, paper_params: float):
    assert count_parameters(get_model_entry(name)) == pytest.approx(paper_params, rel=0.01)


def test_eanet_r101_has_a_resnet101_backbone():
    with torch.device("meta"):
        model = get_model_entry("eanet-ea-r101").create()
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    assert backbone_params == pytest.approx(RESNET101_WITHOUT_FC, rel=0.01)
    assert count_parameters(get_model_entry("eanet-ea-r101")) > backbone_params


@pytest.mark.parametrize("entry", list_models(bundled=False), ids=_ids(list_models(bundled=False)))
def test_paper_size_model_builds_and_gives_declared_output_shapes_on_meta(entry: ModelEntry):
    with torch.device("meta"):
        model = entry.create().eval()
        inputs = tuple(
            torch.empty(entry.concrete_shape(spec, 1), dtype=getattr(torch, spec.dtype)) for spec in entry.inputs
        )
        with torch.no_grad():
            outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert [tuple(o.shape) for o in outputs] == [entry.concrete_shape(s, 1) for s in entry.outputs]


@pytest.mark.parametrize("entry", list_models(), ids=_ids(list_models()))
def test_name_is_arch_attention_size(entry: ModelEntry):
    match = NAME_PATTERN.match(entry.name)
    assert match is not None, entry.name
    assert match.groupdict() == {"arch": entry.arch, "attn": entry.attention, "size": entry.size}


@pytest.mark.parametrize("entry", list_models(), ids=_ids(list_models()))
def test_every_model_has_a_twin_with_the_other_attention_and_same_config(entry: ModelEntry):
    twin = twin_of(entry.name)
    assert twin.attention != entry.attention
    assert (twin.arch, twin.size, twin.task) == (entry.arch, entry.size, entry.task)
    assert dataclasses.replace(twin.config, attention=entry.attention) == entry.config
