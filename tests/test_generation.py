"""The conditional GAN's own parts: the (K + 1)-way losses, the discriminator, the augmentation
every image it sees goes through, and the trainer's phase schedule (discriminator first)."""

from __future__ import annotations

from itertools import permutations

import pytest
import torch
import torch.nn.functional as F

from easerve.model_defs.generation import (
    ConditionalGAN,
    SAGANConfig,
    discriminator_loss,
    generator_loss,
)
from easerve.training import checkpoint
from easerve.training.augment import recolour, translate
from easerve.training.tasks import generation as generation_task
from easerve.training.trainer import TrainConfig, train

NUM_CLASSES = 6
CONFIDENT = 8.0


def _logits(classes: list[int]) -> torch.Tensor:
    """(B, K + 1) logits that put each row's mass on the given class."""
    return F.one_hot(torch.tensor(classes), NUM_CLASSES + 1).float() * CONFIDENT


def test_discriminator_loss_is_low_when_real_is_its_class_and_fake_is_fake():
    labels = torch.tensor([0, 3, 5])
    fake_class = [NUM_CLASSES] * 2
    right = discriminator_loss(_logits([0, 3, 5]), labels, _logits(fake_class))
    real_as_fake = discriminator_loss(_logits([NUM_CLASSES] * 3), labels, _logits(fake_class))
    fake_as_real = discriminator_loss(_logits([0, 3, 5]), labels, _logits([1, 2]))
    assert right < 0.01
    assert real_as_fake > 5 and fake_as_real > 5


def test_generator_loss_wants_the_asked_for_class_not_fake_nor_another_class():
    labels = torch.tensor([1, 4])
    assert generator_loss(_logits([1, 4]), labels) < 0.01
    assert generator_loss(_logits([NUM_CLASSES] * 2), labels) > 5
    assert generator_loss(_logits([4, 1]), labels) > 5


def test_discriminator_scores_k_plus_one_classes_and_its_loss_reaches_the_generator():
    torch.manual_seed(0)
    model = ConditionalGAN(SAGANConfig(num_classes=NUM_CLASSES))
    labels = torch.arange(4) % NUM_CLASSES
    fake = model.generator(torch.randn(4, model.config.z_dim), labels)
    logits = model.discriminator(fake)
    assert logits.shape == (4, NUM_CLASSES + 1)
    generator_loss(logits, labels).backward()
    assert model.generator.class_embedding.weight.grad.abs().sum() > 0
    assert model.generator.project.weight.grad.abs().sum() > 0


def test_translate_shifts_each_image_by_at_most_its_bound_and_passes_gradients():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16, requires_grad=True)
    shifted = translate(images, max_shift_fraction=0.25)
    assert shifted.shape == images.shape
    padded = F.pad(images.detach(), (4, 4, 4, 4), mode="replicate")
    windows = [(top, left) for top in range(9) for left in range(9)]
    moved = 0
    for index in range(16):
        matches = [
            (top, left)
            for top, left in windows
            if torch.equal(padded[index, :, top : top + 16, left : left + 16], shifted[index].detach())
        ]
        assert matches, f"image {index} is not a shifted copy"
        moved += (4, 4) not in matches
    assert moved > 8  # random offsets: most images move
    shifted.sum().backward()
    assert images.grad.abs().sum() > 0


def test_recolour_permutes_each_images_channels_and_inverts_some():
    torch.manual_seed(0)
    images = (torch.rand(32, 3, 8, 8) * 2 - 1).requires_grad_()
    recoloured = recolour(images)
    inverted = 0
    for original, new in zip(images.detach(), recoloured.detach()):
        candidates = [
            (sign, order)
            for sign in (1.0, -1.0)
            for order in permutations(range(3))
            if torch.equal(new, sign * original[list(order)])
        ]
        assert candidates, "not a channel permutation of its input, negated or not"
        inverted += candidates[0][0] < 0
    assert 4 < inverted < 28
    recoloured.sum().backward()
    assert images.grad.abs().sum() > 0


def _train_gan(out, steps: int) -> dict[str, torch.Tensor]:
    """The exact (FP32) parameters after `steps` steps, from the saved train state."""
    config = TrainConfig(
        model="eagan-ea-tiny",
        out=out,
        steps=steps,
        batch_size=8,
        lr=2e-4,
        train_samples=32,
        test_samples=8,
        progress=False,
        judge=out / "no-judge",
    )
    train(config)
    model = ConditionalGAN(SAGANConfig(num_classes=NUM_CLASSES))
    checkpoint.load_train_state(out, model, {})
    return dict(model.named_parameters())


@pytest.mark.parametrize("first_step,generator_moves", [(4, False), (2, True)])
def test_the_generator_trains_only_from_its_first_step(tmp_path, monkeypatch, first_step, generator_moves):
    monkeypatch.setattr(generation_task, "GENERATOR_FIRST_STEP", first_step)
    torch.manual_seed(0)
    initial = dict(ConditionalGAN(SAGANConfig(num_classes=NUM_CLASSES)).named_parameters())
    trained = _train_gan(tmp_path / "gan", steps=4)
    changed = {name for name, value in initial.items() if not torch.equal(value, trained[name])}
    assert any(name.startswith("discriminator.") for name in changed)
    assert any(name.startswith("generator.") for name in changed) == generator_moves
