"""The optimize loop's data path (raygrid.data.stream.train_batches over SRTrainSet): a fresh crop
for every sample, the same stream with any number of loader workers, on resume and across ranks."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from raygrid.data.sr import SRTrainSet
from raygrid.data.stream import (
    PassOrder,
    StreamBatchSampler,
    loader_workers,
    resolve_num_workers,
    step_positions,
    train_batches,
)


def _images(root, n, size=(56, 64)):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC).save(f"{root}/img{i}.png")
    return str(root)


@pytest.fixture
def two_images(tmp_path):
    return _images(tmp_path / "two", 2)


@pytest.fixture
def three_images(tmp_path):
    return _images(tmp_path / "three", 3)


def _run(root, batch_size, stop_step, start_step=0, seed=0, **kw):
    """Batches of a run as the optimize loop reads them: a fresh dataset (as in a new process)."""
    ds = SRTrainSet(root, hr_crop=24, seed=seed)
    return list(train_batches(ds, batch_size, start_step, stop_step=stop_step, **kw))


def _equal(a, b):
    return torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, True), (2, False)])
def test_fresh_crops_every_epoch(two_images, workers, persistent):
    # batch 2 over a 2-image set: each step is one epoch (one pass over the images)
    epochs = 3
    batches = _run(two_images, 2, epochs, num_workers=workers, persistent_workers=persistent)
    assert len(batches) == epochs
    order = PassOrder(0, 2)
    crops: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for step, batch in enumerate(batches):
        positions = list(step_positions(step, 2))
        assert sorted(order.item(p) for p in positions) == [0, 1]  # every image once per epoch
        for p, hr in zip(positions, batch["hr"]):
            crops[order.item(p)].append(hr)
    for per_image in crops.values():  # each image's crop changes from epoch to epoch
        for e in range(epochs - 1):
            assert not torch.equal(per_image[e], per_image[e + 1])
    # the loader delivers exactly the stream: sample p is dataset[p], whatever the workers
    ds = SRTrainSet(two_images, hr_crop=24, seed=0)
    for step, batch in enumerate(batches):
        expected = [ds[p] for p in step_positions(step, 2)]
        assert torch.equal(batch["hr"], torch.stack([s["hr"] for s in expected]))
        assert torch.equal(batch["lr"], torch.stack([s["lr"] for s in expected]))


def test_resumed_run_sees_the_uninterrupted_crop_stream(three_images):
    # 3 images, batch 2: passes end mid-batch, so the resume point is inside a pass
    full = _run(three_images, 2, 7, num_workers=0)
    for start, workers in [(3, 2), (5, 0)]:
        resumed = _run(three_images, 2, 7, start_step=start, num_workers=workers)
        assert len(resumed) == 7 - start
        assert all(_equal(a, b) for a, b in zip(full[start:], resumed))
    # and the stream does depend on the seed
    other = _run(three_images, 2, 7, seed=1)
    assert not all(_equal(a, b) for a, b in zip(full, other))


def test_two_ranks_see_the_crop_stream_of_one_rank_with_the_double_batch(three_images):
    single = _run(three_images, 4, 3)
    rank0 = _run(three_images, 2, 3, rank=0, world=2)
    rank1 = _run(three_images, 2, 3, rank=1, world=2, num_workers=2)
    for s in range(3):
        for key in ("hr", "lr"):
            assert torch.equal(torch.cat([rank0[s][key], rank1[s][key]]), single[s][key])
    # resumed ranks continue their own slices
    resumed1 = _run(three_images, 2, 3, start_step=2, rank=1, world=2)
    assert _equal(resumed1[0], rank1[2])
    assert set(step_positions(1, 2, 0, 2)).isdisjoint(step_positions(1, 2, 1, 2))


def test_train_batches_leaves_the_global_torch_rng_alone(two_images):
    # the model's random stream (dropout, init, ...) must not shift with each loader (re)start
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    _run(two_images, 2, 1, num_workers=2)
    assert torch.equal(torch.rand(3), expected)


def test_pass_order_is_a_fresh_permutation_per_pass():
    order = PassOrder(3, 10)
    passes = [[order.item(k * 10 + i) for i in range(10)] for k in range(4)]
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) == 4
    assert passes[1] == [PassOrder(3, 10).item(10 + i) for i in range(10)]  # no hidden state
    with pytest.raises(IndexError):
        order.item(-1)
    with pytest.raises(ValueError, match="non-negative"):
        PassOrder(-1, 10)


def test_stream_batch_sampler_positions_and_bad_input():
    assert list(StreamBatchSampler(2, start_step=1, stop_step=3, rank=1, world=3)) == [[8, 9], [14, 15]]
    assert len(StreamBatchSampler(2, start_step=1, stop_step=3)) == 2
    with pytest.raises(TypeError, match="unbounded"):
        len(StreamBatchSampler(2))
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        StreamBatchSampler(2, rank=2, world=2)
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        StreamBatchSampler(2, start_step=-1)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        StreamBatchSampler(0)


def test_loader_workers_from_the_trials_cpus():
    assert loader_workers(8) == 7  # paper grid: cpus_per_worker 8
    assert loader_workers(2.5) == 1
    assert loader_workers(1) == 0 and loader_workers(0.95) == 0 and loader_workers(0) == 0
    with pytest.raises(ValueError, match="cpus_per_worker"):
        loader_workers(-1)
    assert resolve_num_workers("auto", 8) == 7
    assert resolve_num_workers(3, 8) == 3 and resolve_num_workers(0, None) == 0
    with pytest.raises(ValueError, match="needs the trial's cpus_per_worker"):
        resolve_num_workers("auto", None)
    with pytest.raises(ValueError, match="'auto' or an integer >= 0"):
        resolve_num_workers(-2, 8)
