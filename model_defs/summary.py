"""Parameter counts and the registry table (used by `easerve models` and the README)."""

from __future__ import annotations

import torch

from easerve.artifacts.tasks import TaskName
from easerve.model_defs.attention import AttentionKind
from easerve.model_defs.registry import ModelEntry, list_models


def count_parameters(entry: ModelEntry) -> int:
    """Trainable parameter count, built on the meta device so paper-size models cost nothing."""
    with torch.device("meta"):
        model = entry.create()
    return sum(p.numel() for p in model.parameters())


def _shape(entry: ModelEntry) -> str:
    return ", ".join(f"{s.name} ({', '.join(map(str, s.shape))})" for s in entry.inputs)


def model_table(
    task: TaskName | None = None,
    attention: AttentionKind | None = None,
    bundled: bool | None = None,
    markdown: bool = False,
) -> str:
    """One row per registered model: name, task, attention, params, input, bundled."""
    header = ("name", "task", "attention", "params", "input", "bundled")
    rows = [
        (
            e.name,
            e.task,
            e.attention,
            f"{count_parameters(e) / 1e6:.2f}M",
            _shape(e),
            "yes" if e.bundled else "no",
        )
        for e in list_models(task, attention, bundled)
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in (header, *rows))
