"""Can the SR loader keep an H100 fed? PNG decoding vs the prepared store, per loader core.

    python bench/data_loader.py            # ~1-2 minutes on 2 cores
    python bench/data_loader.py --quick    # CI-sized
    python bench/data_loader.py --mfu 0.5 --peak-tflops 989

1. Makes DIV2K-sized (2040x1356) PNGs offline: mosaics of scikit-image's bundled photographs,
   each tile resized by less than 1.3x so the pictures keep natural detail and compress like
   photographs (never downloaded).
2. Measures training samples/s on one core for (a) the PNG path (today's: a whole image decoded
   for every crop, no in-memory cache as for DF2K) and (b) the prepared store
   (raygrid.data.sr_store), both as `SRTrainSet` makes samples: 256² HR crop, flips, LR by
   antialiased bicubic on the fly. Each is timed in-process (one thread) and through the
   optimize loop's data path (`train_batches`, one loader worker, batch 16): the second adds
   collation and the worker-to-loop transfer and is the figure the ratios use.
3. The demand: samples/s one H100 consumes running the paper's optimize step (SwinIR-M + VGG-16
   fidelity + ResNet-50 patch discriminator, batch 16, 256² crops), from the step's FLOPs in
   raygrid.costs at the stated MFU of the dense bf16 peak.
4. The ratio of the loader's rate with a paper-grid trial's loader workers
   (`loader_workers(cpus_per_worker)` from search_spaces/paper.yaml: 8 CPUs -> 7 workers) to that
   demand, for both paths. Per-core rates are samples per CPU-second of the loading process
   (getrusage), so agents sharing this machine's cores do not distort them. Loader workers are
   separate processes that share nothing but the page cache, so the rate of k workers on k cores
   is taken as k x the one-worker rate (this machine has too few cores to run 7). The store's
   pages are warm (a node whose page cache holds the store); a wall-clock rate with every crop
   read from disk is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_step import H100_BF16_DENSE_TFLOPS, paper_trial, step_gflops

from raygrid.data.images import list_images, read_rgb, resize_rgb, write_rgb
from raygrid.data.sr import SRTrainSet
from raygrid.data.sr_store import build_store, default_store_location
from raygrid.data.stream import loader_workers, train_batches

DIV2K_SIZE = (1356, 2040)  # height, width of a DIV2K HR image
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
PAPER_SPACES = ("raygrid/search_spaces/paper.yaml",)


def paper_optimize() -> dict:
    """cpus_per_worker, batch_size and hr_crop of the paper grid's optimize stage."""
    for rel in PAPER_SPACES:
        if (ROOT / rel).is_file():
            stage = yaml.safe_load((ROOT / rel).read_text())["stages"]["optimize"]
            return {"space": rel, "cpus_per_worker": stage["resources"]["cpus_per_worker"],
                    "batch_size": stage["base"]["data"]["batch_size"], "hr_crop": stage["base"]["data"]["hr_crop"]}
    raise SystemExit(f"bench/data_loader.py: no paper space at {' or '.join(PAPER_SPACES)} under {ROOT}")


def make_images(folder: Path, n: int) -> list[str]:
    """n DIV2K-sized mosaics (3 x 4 tiles of scikit-image photographs, random crops and flips)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    if len(list_images(folder)) == n:  # made by an earlier run
        return list_images(folder)
    photos = [getattr(skimage.data, name)()[..., :3] for name in SOURCES]
    h, w = DIV2K_SIZE
    th, tw = h // 3, w // 4
    rng = np.random.default_rng(0)
    for i in range(n):
        canvas = np.zeros((h, w, 3), np.uint8)
        for r in range(3):
            for c in range(4):
                photo = photos[rng.integers(len(photos))]
                # resize the photo to cover the tile by 1.0-1.3x, then take a random tile-sized crop
                f = max(th / photo.shape[0], tw / photo.shape[1]) * rng.uniform(1.0, 1.3)
                big = resize_rgb(photo, (int(photo.shape[1] * f) + 1, int(photo.shape[0] * f) + 1))
                y, x = rng.integers(big.shape[0] - th + 1), rng.integers(big.shape[1] - tw + 1)
                tile = big[y : y + th, x : x + tw]
                tile = tile[:, ::-1] if rng.random() < 0.5 else tile
                canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
        write_rgb(folder / f"{i:04d}.png", canvas)
    return list_images(folder)


def per_core_in_process(ds: SRTrainSet, samples: int) -> float:
    """Samples per CPU-second of `ds[p]` in this process on one thread (after a warm-up sample)."""
    ds[0]
    t0 = time.process_time()
    for p in range(1, samples + 1):
        ds[p]
    return samples / (time.process_time() - t0)


def cold_store_rate(ds: SRTrainSet, samples: int) -> float:
    """Wall-clock samples/s of the store with each array's pages dropped before every crop, so
    every crop is read from this machine's disk (a node whose page cache cannot hold the store)."""
    t0 = time.perf_counter()
    for p in range(samples):
        ds.store._open.clear()  # mapped pages cannot be dropped
        for e in ds.store.entries:
            fd = os.open(os.path.join(ds.store.location, e["array"]), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        ds[p]
    return samples / (time.perf_counter() - t0)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: the finished loader worker
    return r.ru_utime + r.ru_stime


def per_core_loader(ds: SRTrainSet, batch_size: int, batches: int) -> tuple[float, float]:
    """Through train_batches with one (non-persistent) loader worker: samples per CPU-second of
    the worker, and the loop process's CPU milliseconds per batch (receiving it)."""
    worker0, loop0 = _children_cpu(), time.process_time()
    n = sum(len(b["hr"]) for b in train_batches(ds, batch_size, 0, num_workers=1, stop_step=batches,
                                                 persistent_workers=False))
    return n / (_children_cpu() - worker0), (time.process_time() - loop0) / batches * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: 2 images, few samples")
    p.add_argument("--images", type=int, default=None, help="DIV2K-sized images to make (default 6; quick 2)")
    p.add_argument("--mfu", type=float, default=0.35, help="model FLOP utilisation of the H100 step")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS, help="H100 dense bf16 peak")
    p.add_argument("--workdir", default=None, help="where the images and the store go (default: a cache folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    q = args.quick
    n_images = args.images or (2 if q else 6)
    png_samples, store_samples, cold_samples = (4, 60, 20) if q else (16, 400, 100)
    png_batches, store_batches = (1, 4) if q else (3, 30)
    paper = paper_optimize()
    crop, batch = paper["hr_crop"], paper["batch_size"]
    workers = loader_workers(paper["cpus_per_worker"])

    cache = os.environ.get("RAYGRID_CACHE") or os.path.join(tempfile.gettempdir(), "raygrid-bench")
    work = Path(args.workdir or os.path.join(cache, "bench-data-loader"))
    root = str(work / f"div2k-{n_images}")
    t0 = time.perf_counter()
    make_images(Path(root), n_images)
    made = time.perf_counter() - t0
    t0 = time.process_time()
    for path in list_images(root):
        read_rgb(path)
    decode_ms = (time.process_time() - t0) / n_images * 1e3
    t0 = time.perf_counter()
    build_store(root, default_store_location(root))
    build_s = time.perf_counter() - t0
    png_mb = statistics.fmean(os.path.getsize(p) for p in list_images(root)) / 1e6

    png = SRTrainSet(root, hr_crop=crop, seed=0, cache=False)
    store = SRTrainSet(root, hr_crop=crop, seed=0, store="auto")
    rates = {
        "PNG decode": (per_core_in_process(png, png_samples), *per_core_loader(png, batch, png_batches)),
        "store": (per_core_in_process(store, store_samples), *per_core_loader(store, batch, store_batches)),
    }
    cold = cold_store_rate(store, cold_samples)

    gflops = step_gflops(paper_trial(hr_crop=crop, batch_size=batch))
    step_s = gflops * 1e9 / (args.mfu * args.peak_tflops * 1e12)
    demand = batch / step_s

    print("bench/data_loader.py: SR training samples (256² HR crop + flips + bicubic LR) vs one H100's demand")
    print(f"  images      {n_images} x {DIV2K_SIZE[1]}x{DIV2K_SIZE[0]} PNG, mean {png_mb:.1f} MB, read_rgb "
          f"{decode_ms:.0f} ms CPU/image (made in {made:.0f} s); store {np.prod(DIV2K_SIZE) * 3 / 1e6:.1f} MB/image, "
          f"built in {build_s / n_images * 1e3:.0f} ms/image")
    print(f"  demand      {paper['space']}: batch {batch}, crop {crop}; paper cell {gflops / 1e3:.2f} TFLOP/step "
          f"(raygrid.costs) at {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s = {step_s * 1e3:.1f} ms/step "
          f"-> {demand:.0f} samples/s")
    print(f"  loader      cpus_per_worker {paper['cpus_per_worker']:g} -> {workers} loader workers "
          "(rate = workers x the one-worker rate)")
    print()
    head = ("path", "in-process", "1 loader worker", f"x {workers} workers", "ratio to H100", "loop side")
    print(f"  {head[0]:<12}{head[1]:>14}{head[2]:>18}{head[3]:>14}{head[4]:>15}{head[5]:>16}")
    for name, (inproc, loader, loop_ms) in rates.items():
        total = loader * workers
        print(f"  {name:<12}{inproc:>12.1f}/s{loader:>16.1f}/s{total:>12.0f}/s{total / demand:>14.2f}x"
              f"{loop_ms:>10.1f} ms/batch")
    print("  (per core: samples per CPU-second of the loading process, so other load on a shared machine "
          "does not count;\n   loop side: CPU the train loop's process spends receiving one batch)")
    print(f"  store, cold pages: {cold:.1f} samples/s wall clock on this machine's disk "
          "(pages dropped with posix_fadvise before every crop)")
    store_ratio = rates["store"][1] * workers / demand
    png_ratio = rates["PNG decode"][1] * workers / demand
    loop_share = demand / batch * rates["store"][2] / 1e3
    print(f"  at the H100's {demand / batch:.0f} batches/s the loop's own core spends {loop_share:.0%} of its time "
          "receiving batches")
    verdict = "meets" if store_ratio >= 3 else "does NOT meet"
    print(f"\n  store {store_ratio:.1f}x vs PNG {png_ratio:.2f}x of the H100's demand: the store {verdict} "
          f"the 3x target; store/PNG per core = {rates['store'][1] / rates['PNG decode'][1]:.0f}x")


if __name__ == "__main__":
    main()
