"""Distillation's data layout: which teacher layers a student keeps, the margins its loss
compares, padded batches and the seeded schedule that makes a run resumable.

The training itself (JAX compiles; seconds to minutes) is in tests/data/models/test_distill.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.learning.distill import (
    DistillConfig,
    margin_pairs,
    padded_batch,
    schedule_of,
)
from streamrank.models.learning.student import keep_layers, tiny_weights
from tests.helpers import tiny_tokenized

HEADS = 2


def test_keep_layers_renumbers_the_chosen_teacher_layers():
    teacher = tiny_weights(layers=3, hidden=8, heads=HEADS)
    student = keep_layers(teacher, (0, 2))
    np.testing.assert_array_equal(
        student["encoder.layer.1.output.dense.weight"],
        teacher["encoder.layer.2.output.dense.weight"],
    )
    assert not any(name.startswith("encoder.layer.2.") for name in student)
    with pytest.raises(ValueError, match="no layer"):
        keep_layers(teacher, (0, 7))


def test_margins_compare_every_pair_of_a_group_once():
    first, second = margin_pairs(4)
    assert len(first) == 6
    assert all(i < j for i, j in zip(first, second, strict=True))


def test_batches_pad_to_the_length_step_and_keep_group_order():
    data = tiny_tokenized()
    batch = padded_batch(data, [2, 0])
    assert batch["ids"].shape[1] % 32 == 0
    expected = np.concatenate([data.teacher[8:12], data.teacher[0:4]])
    np.testing.assert_array_equal(batch["teacher"], expected)
    assert batch["mask"][0].sum() == len(data.ids[8])


def test_the_schedule_is_fixed_by_the_seed_and_capped_by_steps():
    config = DistillConfig(epochs=2, batch_groups=2, seed=3)
    assert schedule_of(config, 6) == schedule_of(config, 6)
    assert len(schedule_of(config, 6)) == 6
    assert (
        schedule_of(DistillConfig(epochs=2, batch_groups=2, seed=3, steps=4), 6)
        == (schedule_of(config, 6)[:4])
    )
    assert schedule_of(config, 6) != schedule_of(DistillConfig(epochs=2, batch_groups=2, seed=4), 6)
