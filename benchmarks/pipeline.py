"""``nst bench data``: the input pipelines against the rate the training step consumes.

* CIFAR: :class:`train.data.ArrayBatches` with the paper's augmentation (zero
  pad 4, random 32x32 crop, random flip, per-channel normalisation), batch
  128, NCHW float32 -- exactly the batches the trainer receives -- over a
  50,000-image uint8 array (the size of the CIFAR training set; random pixels:
  the cost does not depend on them).  Reported as augmented images/s (the
  median of ``repeat`` rounds of ``batches`` batches each) and, when the step
  benchmark ran in the same invocation (``nst bench`` / ``nst bench all``),
  against the images/s of the KD + NST step: the pipeline runs in the
  training thread between steps, so its share of an epoch is
  ``step rate / augment rate``.
* ImageNet: :mod:`train.data.recordio`'s ``mx.io.ImageRecordIter`` (JPEG decoding,
  random-resized crop to 224x224, flip, colour jitter, PCA lighting,
  normalisation, batch 32) over real JPEGs: a tiny ImageNet-style folder
  written by :func:`train.data.pack.make_tiny_imagenet` and packed by ``nst pack``
  (:func:`train.data.pack.pack`) into a temporary folder.  Its decoding threads
  are printed: ``data.threads`` asks for some, and MXNet caps them at
  ``max(1, cores / 2 - 1)``.
"""

import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import benchmark, loadavg, progress

__all__ = ["augment_rate", "recordio_rate", "bench_data", "TARGET_IMAGES_PER_S"]

TARGET_IMAGES_PER_S = 40000.0


def augment_rate(batch=128, batches=100, repeat=5, images=50000, show_progress=False):
    """Median images/s of augmented, normalised NCHW float32 CIFAR batches."""
    from train import data as arrays

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=images)
    source = arrays.ArrayBatches(pixels, labels, batch, shuffle=True, augment=True, seed=0,
                                 mean=arrays.CIFAR10_MEAN, std=arrays.CIFAR10_STD)
    batches = min(batches, len(source))

    def one_round(epoch):
        start = time.perf_counter()
        count = 0
        for k, (data, _label) in enumerate(source.iter_epoch(epoch)):
            count += data.shape[0]
            if k + 1 == batches:
                break
        return count / (time.perf_counter() - start)

    one_round(0)                                   # warm-up: buffers, page faults
    rates = [one_round(epoch) for epoch in progress(range(1, repeat + 1), total=repeat,
                                                    desc="augment", enabled=show_progress)]
    return statistics.median(rates), rates


def _effective_threads(requested):
    """The decoding threads ``mx.io.ImageRecordIter`` really starts (its own cap)."""
    return max(1, min(int(requested), max((os.cpu_count() or 1) // 2 - 1, 1)))


def recordio_rate(folder, classes=4, per_class=80, size=256, image_size=224, batch=32,
                  threads=4, repeat=3, show_progress=False):
    """Median images/s of the ImageNet training iterator over packed real JPEGs."""
    from train.data.recordio import record_source
    from train.data.pack import make_tiny_imagenet, pack

    images = make_tiny_imagenet(os.path.join(folder, "images"), classes=classes,
                                per_class=per_class, size=size, seed=0)
    packed = os.path.join(folder, "packed")
    stats = pack(images, packed, val_fraction=0.1, resize=size, threads=os.cpu_count() or 1,
                 progress=False, log=lambda *_: None)
    dcfg = {"root": packed, "image_size": image_size, "val_resize": max(256, image_size),
            "threads": threads, "augment": True, "flip": True, "test_batch_size": batch}
    source = record_source(dcfg, seed=0, local_batch=batch)
    train = source.train

    def one_round(epoch):
        start = time.perf_counter()
        count = 0
        for data, _label in train.iter_epoch(epoch):
            data.wait_to_read()
            count += data.shape[0]
        return count / (time.perf_counter() - start)

    one_round(0)
    rates = [one_round(epoch) for epoch in progress(range(1, repeat + 1), total=repeat,
                                                    desc="recordio", enabled=show_progress)]
    return statistics.median(rates), {
        "recordio_images": stats["train"], "recordio_batches_per_epoch": len(train),
        "recordio_image_size": image_size, "recordio_source_size": size,
        "recordio_batch": batch, "recordio_threads_requested": threads,
        "recordio_threads": _effective_threads(threads)}


@benchmark("data", "input pipelines: augmented CIFAR images/s, ImageNet RecordIO images/s")
def bench_data(args, shared):
    quick = args.quick
    repeat = args.repeat or (3 if quick else 5)
    metrics = {"data_repeat": repeat, "load_before_data": loadavg()}
    rate, rates = augment_rate(batches=20 if quick else 100, repeat=repeat,
                               show_progress=args.progress)
    metrics["augment_images_per_s"] = rate
    metrics["augment_target_images_per_s"] = TARGET_IMAGES_PER_S
    step = shared.get("step", {})
    step_rate = step.get("distill_images_per_s_cifar")
    if step_rate:
        metrics["step_images_per_s_cifar"] = step_rate
        metrics["augment_headroom_cifar"] = rate / step_rate
        metrics["data_share_of_epoch_cifar"] = step_rate / (rate + step_rate)
    folder = tempfile.mkdtemp(prefix="nst-bench-data-")
    try:
        rec_rate, rec_info = recordio_rate(
            folder, per_class=24 if quick else 80, size=128 if quick else 256,
            image_size=112 if quick else 224, repeat=min(repeat, 3),
            show_progress=args.progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    metrics["recordio_images_per_s"] = rec_rate
    metrics.update(rec_info)
    step_rate_imagenet = step.get("distill_images_per_s_imagenet")
    if step_rate_imagenet:
        metrics["step_images_per_s_imagenet"] = step_rate_imagenet
    metrics["load_after_data"] = loadavg()
    shared["data"] = metrics
    plot = {"data": [("augmented CIFAR (NumPy)", rate),
                     ("ImageNet RecordIO (%d thread%s)" % (
                         rec_info["recordio_threads"],
                         "" if rec_info["recordio_threads"] == 1 else "s"), rec_rate)]}
    if step_rate:
        plot["data"].append(("KD+NST step consumes (CIFAR)", step_rate))
    if step_rate_imagenet:
        plot["data"].append(("KD+NST step consumes (ImageNet 112)", step_rate_imagenet))
    return {"metrics": metrics, "markdown": _markdown(metrics, repeat), "plot": plot}


def _markdown(m, repeat):
    lines = ["Input pipelines, median of %d rounds:" % repeat, "",
             "| pipeline | images/s | consumed by the KD+NST step | note |",
             "|---|---:|---:|---|"]
    step = m.get("step_images_per_s_cifar")
    lines.append("| CIFAR `ArrayBatches` (pad 4 + crop + flip + normalise, NCHW float32, "
                 "batch 128) | %.0f | %s | target >= %.0f: %s |" % (
                     m["augment_images_per_s"], "%.1f" % step if step else "-",
                     TARGET_IMAGES_PER_S,
                     "met" if m["augment_images_per_s"] >= TARGET_IMAGES_PER_S else "NOT met"))
    step_in = m.get("step_images_per_s_imagenet")
    lines.append("| ImageNet `ImageRecordIter` (JPEG %dpx -> random-resized crop %dx%d + "
                 "flip + colour + PCA, batch %d) | %.0f | %s | %d decoding thread(s) "
                 "(asked for %d; MXNet caps at max(1, cores/2 - 1)) |" % (
                     m["recordio_source_size"], m["recordio_image_size"],
                     m["recordio_image_size"], m["recordio_batch"],
                     m["recordio_images_per_s"],
                     "%.1f (at 112x112)" % step_in if step_in else "-",
                     m["recordio_threads"], m["recordio_threads_requested"]))
    if step:
        lines += ["", "The CIFAR pipeline runs in the training thread between steps: it is "
                  "%.4f%% of an epoch's time (it produces %.0fx what the step consumes), so a "
                  "prefetching thread could save at most that." % (
                      100 * m["data_share_of_epoch_cifar"], m["augment_headroom_cifar"])]
    return "\n".join(lines)
