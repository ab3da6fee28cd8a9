"""The trainer on a few steps for every task: loss goes down, checkpoints round-trip, resume, each
process's batches, DDP."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from easerve.model_defs.registry import list_models
from easerve.training import checkpoint
from easerve.training.datasets import open_dataset
from easerve.training.datasets.imagefolder import ImageFileDataset
from easerve.training.distributed import Distributed
from easerve.training.loader import MAX_DEFAULT_WORKERS, batches, default_workers, train_loader
from easerve.training.tasks import task_for
from easerve.training.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
EA_MODELS = [e.name for e in list_models(attention="ea", bundled=True)]
# Steps and learning rates that move each model measurably in a couple of seconds.
FAST = {"train_samples": 48, "test_samples": 16, "batch_size": 8, "progress": False}
# The transformer classifier overshoots on 8 steps at 2e-3; the conv models need that much to move.
FAST_LR = {"eamlp-ea-tiny": 5e-4}


def _config(name: str, out: Path, **overrides) -> TrainConfig:
    return TrainConfig(model=name, out=out, **(FAST | {"steps": 6, "lr": 2e-3} | overrides))


def _first_batch(config: TrainConfig, task_name: str):
    entry = next(e for e in list_models() if e.name == config.model)
    from easerve.training.datasets import generated_source
    from easerve.training.trainer import _data_size

    dataset = open_dataset(
        generated_source(task_name),
        task_name,
        "train",
        seed=config.seed,
        num_samples=config.train_samples,
        **_data_size(entry, None),
    )
    loader = train_loader(
        dataset, entry.spec.target, config.batch_size, config.seed, Distributed(), workers=0, pin_memory=False
    )
    return entry, dataset, next(batches(loader, 0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> (config, info) of an 8-step run, trained once for all the tests of a model."""
    runs = {}
    # One folder of checkpoints only, so the weights table sees no other test's files.
    weights_dir = tmp_path_factory.mktemp("trained")

    def run(name: str):
        if name not in runs:
            config = _config(name, weights_dir / name, steps=8, lr=FAST_LR.get(name, 2e-3))
            runs[name] = (config, train(config))
        return runs[name]

    return run


@pytest.mark.parametrize("name", EA_MODELS)
def test_training_lowers_the_loss_on_the_first_batch(name, tmp_path, trained):
    config = _config(name, tmp_path / name, steps=8)
    entry, dataset, batch = _first_batch(config, next(e.task for e in list_models() if e.name == name))
    task = task_for(entry, list(dataset.class_names), {"judge": tmp_path / "no-judge"})
    phase = task.phases()[0]  # the discriminator for the GAN, the only phase elsewhere
    torch.manual_seed(config.seed)
    fresh = entry.create()
    with torch.no_grad():
        fresh.train()
        before = float(phase.loss(fresh, batch))
    trained_model, _ = checkpoint.load_checkpoint(trained(name)[0].out)
    with torch.no_grad():
        trained_model.train()
        after = float(phase.loss(trained_model, batch))
    assert after < before


@pytest.mark.parametrize("name", EA_MODELS)
def test_checkpoint_round_trips_with_metadata(name, trained):
    config, info = trained(name)
    model, loaded = checkpoint.load_checkpoint(config.out)
    assert loaded.model_dump() == info.model_dump()
    assert loaded.model == name and loaded.steps == 8 and loaded.class_names
    saved = load_file(str(config.out / checkpoint.WEIGHTS_FILE))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key].to(value.dtype))
    entry = next(e for e in list_models() if e.name == name)
    inputs = entry.example_inputs(2)
    model_again, _ = checkpoint.load_checkpoint(config.out)
    with torch.no_grad():
        first, second = model(*inputs), model_again(*inputs)
    for a, b in zip(
        first if isinstance(first, tuple) else (first,), second if isinstance(second, tuple) else (second,)
    ):
        torch.testing.assert_close(a, b)


def test_resume_continues_from_the_saved_step(tmp_path):
    out = tmp_path / "ckpt"
    first = train(_config("eamlp-ea-tiny", out, steps=3))
    weights_at_3 = load_file(str(out / checkpoint.WEIGHTS_FILE))
    info = train(_config("eamlp-ea-tiny", out, steps=5, resume=True))
    assert info.steps == 5
    # The checkpoint keeps the whole history: both commands and the time of both runs.
    assert info.command == f"{first.command} && {first.command}"
    assert info.training_seconds > first.training_seconds
    model = checkpoint.load_checkpoint(out)[0]
    optimizers = {"model": torch.optim.AdamW(model.parameters())}
    assert checkpoint.load_train_state(out, model, optimizers) == 5
    # Adam's per-parameter step counter carried over: 3 saved + 2 resumed.
    assert float(next(iter(optimizers["model"].state.values()))["step"]) == 5
    weights_at_5 = load_file(str(out / checkpoint.WEIGHTS_FILE))
    assert any(not torch.equal(weights_at_3[k], weights_at_5[k]) for k in weights_at_3)


def _exact_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(checkpoint_dir / checkpoint.TRAIN_STATE_FILE))
    return {
        k.removeprefix(checkpoint.MODEL_PREFIX): v for k, v in state.items() if k.startswith(checkpoint.MODEL_PREFIX)
    }


def test_checkpoint_holds_fp16_weights_and_the_train_state_the_exact_ones(trained):
    config, _ = trained("eamlp-ea-tiny")
    released = load_file(str(config.out / checkpoint.WEIGHTS_FILE))
    exact = _exact_weights(config.out)
    assert released.keys() == exact.keys()
    floating = [k for k, v in exact.items() if v.is_floating_point()]
    assert floating and all(released[k].dtype == torch.float16 for k in floating)
    assert all(exact[k].dtype == torch.float32 for k in floating)
    assert all(torch.equal(released[k], exact[k].half()) for k in floating)
    # The FP32 values carry more than FP16 keeps, so resuming from them is not a rounded restart.
    assert any(not torch.equal(exact[k], exact[k].half().float()) for k in floating)

    model, _ = checkpoint.load_checkpoint(config.out)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    checkpoint.load_train_state(config.out, model, {})
    state = model.state_dict()
    assert all(torch.equal(state[k], exact[k]) for k in floating)


def test_at_rest_keeps_fp32_where_fp16_would_overflow():
    assert checkpoint._at_rest(torch.tensor([1.0, 70000.0])).dtype == torch.float32
    assert checkpoint._at_rest(torch.tensor([1.0, 2.0])).dtype == torch.float16
    assert checkpoint._at_rest(torch.tensor([3])).dtype == torch.int64


def test_a_resume_with_no_further_step_only_re_evaluates(tmp_path):
    out = tmp_path / "ckpt"
    first = train(_config("eamlp-ea-tiny", out, steps=3))
    again = train(_config("eamlp-ea-tiny", out, steps=3, resume=True))
    assert again.command == first.command and again.steps == 3
    assert again.metrics == first.metrics


class _Indices(torch.utils.data.Dataset):
    """Sample i is the number i; remembers the samples read."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.read: list[int] = []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        self.read.append(index)
        return index


def _loader(data, batch_size: int, ddp: Distributed | None = None, workers: int = 0):
    return train_loader(data, "label", batch_size, 3, ddp or Distributed(), workers, pin_memory=False)


def _steps(loader, start_step: int, count: int) -> list[list[int]]:
    return [batch.tolist() for batch in itertools.islice(batches(loader, start_step), count)]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_process_trains_on_its_share_of_every_global_batch(workers):
    """Global batch s is run s % P of the permutation seeded by seed + s // P (P steps an epoch,
    a part batch dropped); of N processes, rank r gets the batch's samples r, r + N, ..."""
    expected = []
    for step in range(7):  # across two epoch boundaries (3 steps an epoch)
        epoch, offset = divmod(step, 3)
        order = torch.randperm(20, generator=torch.Generator().manual_seed(3 + epoch))
        expected.append(order[offset * 6 : (offset + 1) * 6].tolist())
    assert _steps(_loader(_Indices(20), 6, workers=workers), 0, 7) == expected
    for rank in range(2):
        share = _steps(_loader(_Indices(20), 6, Distributed(rank, 2), workers), 0, 7)
        assert share == [batch[rank::2] for batch in expected]


def test_a_resumed_run_reads_only_the_batches_from_its_step_on():
    data = _Indices(20)
    loader = _loader(data, 6)
    fresh = _steps(loader, 0, 7)
    data.read.clear()
    assert _steps(loader, 4, 3) == fresh[4:]  # from the middle of the second epoch
    assert data.read == [index for batch in fresh[4:] for index in batch]


def test_a_split_smaller_than_the_batch_is_the_batch_of_every_step():
    assert [sorted(batch) for batch in _steps(_loader(_Indices(5), 8), 0, 3)] == [list(range(5))] * 3


def test_the_global_batch_must_split_evenly_across_the_processes():
    with pytest.raises(ValueError, match="7 does not split evenly across 2 processes"):
        _loader(_Indices(20), 7, Distributed(0, 2))


def test_loader_workers_by_default_only_for_data_read_from_files(tmp_path):
    generated = open_dataset("shapes-2d", "classification", "train", num_samples=4)
    assert default_workers(generated, 1) == 0
    files = ImageFileDataset([tmp_path / "a.png"], [0], ["a"], 8)
    assert 1 <= default_workers(files, 2) <= MAX_DEFAULT_WORKERS


def test_two_process_torchrun_matches_one_process(tmp_path):
    common = [
        "train",
        "eamlp-ea-tiny",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--train-samples",
        "32",
        "--test-samples",
        "8",
        "--no-progress",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "easerve.cli", *common, "--out", str(tmp_path / "one")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            "-m",
            "easerve.cli",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    # The exact FP32 weights: one FP16 rounding step can tell apart values within tolerance.
    one, two = _exact_weights(tmp_path / "one"), _exact_weights(tmp_path / "two")
    assert checkpoint.read_checkpoint_info(tmp_path / "two").world_size == 2
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4)


# Under torchrun: the detector (its entry point a method other than forward) and the GAN (two
# sub-modules, both phases from step 1) train, and every process ends with the same parameters.
IN_SYNC_SCRIPT = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from easerve.model_defs.registry import get_model_entry
from easerve.training import checkpoint
from easerve.training.tasks import generation
from easerve.training.trainer import TrainConfig, train

generation.GENERATOR_FIRST_STEP = 1
final = {}
round_to_storage_precision = checkpoint.round_to_storage_precision


def keep_final(model):
    final.update({k: v.detach().clone() for k, v in model.named_parameters()})
    round_to_storage_precision(model)


checkpoint.round_to_storage_precision = keep_final
for name in ("eadet-ea-tiny", "eagan-ea-tiny"):
    out = Path(sys.argv[1]) / name
    config = TrainConfig(name, out, steps=3, batch_size=4, lr=2e-3, train_samples=8, test_samples=4,
                         progress=False, judge=out / "no-judge")
    final.clear()
    train(config)
    torch.manual_seed(config.seed)
    initial = dict(get_model_entry(name).create().named_parameters())
    moved = sorted({key.split(".")[0] for key, value in final.items() if not torch.equal(value, initial[key])})
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, (final, moved))
    assert all(all(torch.equal(r[0][k], v) for k, v in final.items()) for r in ranks), name
    if dist.get_rank() == 0:
        print(name, "in sync, moved:", *moved)
"""


def test_two_processes_stay_in_sync_for_a_method_entry_point_and_both_gan_phases(tmp_path):
    script = tmp_path / "in_sync.py"
    script.write_text(IN_SYNC_SCRIPT)
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29532",
            str(script),
            str(tmp_path),
        ],
        cwd=REPO,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert "eadet-ea-tiny in sync, moved: backbone" in launched.stdout
    assert "eagan-ea-tiny in sync, moved: discriminator generator" in launched.stdout
    for name in ("eadet-ea-tiny", "eagan-ea-tiny"):
        assert checkpoint.read_checkpoint_info(tmp_path / name).world_size == 2


def test_input_size_overrides_only_variable_size_models():
    from easerve.model_defs.registry import get_model_entry
    from easerve.training.trainer import _data_size

    assert _data_size(get_model_entry("eanet-ea-tiny"), 64) == {"size": 64}
    assert _data_size(get_model_entry("pct-ea-tiny"), 256) == {"num_points": 256}
    with pytest.raises(ValueError, match="fixed input size"):
        _data_size(get_model_entry("eamlp-ea-tiny"), 32)


def test_weights_table_lists_each_checkpoint_with_its_metrics(trained):
    from easerve.training.report import weights_table

    config, info = trained("eamlp-ea-tiny")
    table = weights_table(config.out.parent)
    row = next(line for line in table.splitlines() if "`eamlp-ea-tiny`" in line)
    assert f"accuracy {info.metrics['accuracy']:.3f}" in row and "8 x 8" in row


@pytest.mark.parametrize("name", ["eamlp-ea-tiny", "eanet-ea-tiny"])
def test_evaluate_reproduces_the_recorded_metrics_and_writes_them_back(name, trained, tmp_path, capsys):
    from easerve.cli import main

    config, info = trained(name)
    assert info.test_samples == FAST["test_samples"]
    copy = tmp_path / name
    shutil.copytree(config.out, copy)
    stale = info.model_copy(update={"metrics": {k: -1.0 for k in info.metrics}, "test_samples": None})
    checkpoint.save_info(copy, stale)
    # Without a recorded split size, the size is asked for.
    assert main(["evaluate", str(copy), "--test-samples", str(FAST["test_samples"]), "--write"]) == 0
    assert "(recorded -1.0000)" in capsys.readouterr().out
    written = checkpoint.read_checkpoint_info(copy)
    assert written.metrics == pytest.approx(info.metrics) and written.test_samples == info.test_samples
    assert written.model_dump(exclude={"metrics"}) == info.model_dump(exclude={"metrics"})


def test_evaluate_refuses_a_generator_without_a_judge(trained, tmp_path, capsys):
    from easerve.cli import main

    config, _ = trained("eagan-ea-tiny")
    assert main(["evaluate", str(config.out), "--judge", str(tmp_path / "none")]) == 2
    assert "needs a judge" in capsys.readouterr().out


def test_evaluate_names_a_missing_checkpoint(tmp_path, capsys):
    from easerve.cli import main

    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing' / checkpoint.INFO_FILE}: no checkpoint.json" in capsys.readouterr().out


def test_evaluate_refuses_a_data_set_that_is_not_here(trained, tmp_path, capsys):
    """Export may check on the generated stand-in; evaluate, whose figures can be written back as
    the checkpoint's own, must not."""
    from easerve.cli import main

    config, info = trained("eamlp-ea-tiny")
    copy = tmp_path / "moved"
    shutil.copytree(config.out, copy)
    checkpoint.save_info(copy, info.model_copy(update={"dataset": str(tmp_path / "gone")}))
    assert main(["evaluate", str(copy), "--write"]) == 2
    assert str(tmp_path / "gone") in capsys.readouterr().out
    assert checkpoint.read_checkpoint_info(copy).metrics == info.metrics
