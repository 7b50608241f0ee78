"""The training sample stream: which sample each step of a run sees, on every rank and worker.

A run's training data is one unbounded stream of sample *positions* 0, 1, 2, ... A stream dataset
maps a position to a sample as a pure function of (seed, position): which item (a per-pass
permutation of the items, `PassOrder`) and its random crop/augmentation (`sample_rng`). It keeps
no epoch counter and no worker or rank state, so nothing has to be told that an epoch moved on
(the `set_epoch` call that persistent DataLoader workers never see).

Positions are handed out by step. Step s (0-based: the batch read after s completed steps) of
rank r in a world of w ranks with per-rank batch B reads

    positions  s*B*w + r*B  ...  s*B*w + r*B + B - 1

so the ranks of one step read disjoint, adjacent slices of one global stream, and rank 0..w-1's
batches of a step, concatenated, are exactly the batch one rank with batch B*w reads. A run
resumed after N completed steps starts at step N and continues the stream it would have read
uninterrupted; the number of DataLoader workers, and whether they persist, changes nothing.

`train_batches` is the one entry a train loop uses; `loader_workers` gives its default worker
count from the CPUs the trial was given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# Domain tags keep the pass permutations and the per-sample draws independent streams of one seed.
_ORDER_TAG = 0x5EED_0001
_SAMPLE_TAG = 0x5EED_0002


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"stream seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def sample_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of the sample at `position`: its crop and augmentation draws, nothing else."""
    return np.random.default_rng([_check_seed(seed), _SAMPLE_TAG, int(position)])


class PassOrder:
    """Item of a stream position: pass k = positions k*n .. k*n+n-1 visits every item once, in a
    permutation drawn from (seed, k). Caches the permutations it computed (a few per process)."""

    def __init__(self, seed: int, n_items: int, cache_passes: int = 4):
        if n_items <= 0:
            raise ValueError(f"a stream needs at least one item, got {n_items}")
        self.seed, self.n = _check_seed(seed), int(n_items)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_passes = cache_passes

    def permutation(self, pass_index: int) -> np.ndarray:
        perm = self._cache.get(pass_index)
        if perm is None:
            perm = np.random.default_rng([self.seed, _ORDER_TAG, int(pass_index)]).permutation(self.n)
            if len(self._cache) >= self._cache_passes:
                self._cache.pop(next(iter(self._cache)))
            self._cache[pass_index] = perm
        return perm

    def item(self, position: int) -> int:
        if position < 0:
            raise IndexError(f"stream position must be >= 0, got {position}")
        pass_index, offset = divmod(int(position), self.n)
        return int(self.permutation(pass_index)[offset])


def step_positions(step: int, batch_size: int, rank: int = 0, world: int = 1) -> range:
    """Stream positions of one rank's batch at (0-based) step `step` (module docstring)."""
    start = step * batch_size * world + rank * batch_size
    return range(start, start + batch_size)


class StreamBatchSampler(Sampler[list[int]]):
    """One list of positions per step, steps `start_step`, start_step+1, ... (< stop_step if given).

    A batch sampler, so every DataLoader batch is exactly one step's batch whatever the number of
    workers (DataLoader hands whole batches to workers and returns them in order).
    """

    def __init__(self, batch_size: int, start_step: int = 0, stop_step: int | None = None,
                 rank: int = 0, world: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world <= 0 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world} ranks (expected 0 <= rank < world)")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0 (the number of completed steps), got {start_step}")
        if stop_step is not None and stop_step < start_step:
            raise ValueError(f"stop_step {stop_step} is before start_step {start_step}")
        self.batch_size, self.start_step, self.stop_step = batch_size, start_step, stop_step
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            yield list(step_positions(step, self.batch_size, self.rank, self.world))
            step += 1

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an unbounded stream (stop_step=None) has no length")
        return self.stop_step - self.start_step


def loader_workers(cpus_per_worker: float) -> int:
    """Default DataLoader workers for a Train worker given `cpus_per_worker` CPUs: all of them but
    one, which the train loop itself keeps (it collates, copies to the device, runs the step's host
    side). A fractional CPU counts as none; never fewer than 0 (load in the loop's process)."""
    if not cpus_per_worker >= 0:  # also rejects NaN
        raise ValueError(f"cpus_per_worker must be >= 0, got {cpus_per_worker!r}")
    return max(0, math.floor(cpus_per_worker) - 1)


def resolve_num_workers(setting: int | Literal["auto"], cpus_per_worker: float | None) -> int:
    """`runtime.num_workers` as a number: "auto" is `loader_workers(cpus_per_worker)`."""
    if setting == "auto":
        if cpus_per_worker is None:
            raise ValueError("num_workers 'auto' needs the trial's cpus_per_worker")
        return loader_workers(cpus_per_worker)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {setting!r}")
    return setting


def train_batches(
    dataset: Dataset,
    batch_size: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
    *,
    stop_step: int | None = None,
    persistent_workers: bool = True,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> Iterator[Any]:
    """The training batches of one rank, from step `start_step` on (the module docstring's stream).

    dataset: a stream dataset (`dataset[p]` depends on the position p alone, for any p >= 0), e.g.
      `raygrid.data.sr.SRTrainSet`.
    batch_size: per rank. start_step: steps already completed (0 on a fresh start, the restored
      checkpoint's step on a resume). stop_step: the step to stop before (the budget), so loader
      workers shut down at the end; None = unbounded.
    Do not wrap the loader in Ray's `prepare_data_loader`: it would swap in a DistributedSampler;
    the rank split is done here.
    """
    sampler = StreamBatchSampler(batch_size, start_step, stop_step, rank, world)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        # The DataLoader draws its workers' base seed from this generator; without one it would
        # draw from the global torch RNG and shift the model's random stream on every (re)start.
        generator=torch.Generator().manual_seed(0),
    )
    yield from loader
