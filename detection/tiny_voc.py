"""A tiny PASCAL-VOC-format detection dataset made of genuine CIFAR-10 images.

For the tests and the ``--quick`` pipeline check: it has exactly the layout of
``VOCdevkit/VOC2007`` (``Annotations/*.xml``, ``JPEGImages/*.jpg``,
``ImageSets/Main/{trainval,train,val,test}.txt`` and the per-class
``<class>_<split>.txt`` files), so the very code that reads the real VOC
(GluonCV's ``VOCDetection``, ``nst voc-eval``) reads it unchanged.

Each image is a canvas (about 200 x 140 pixels) whose background is a
heavily blurred, upscaled CIFAR image (texture without a recognisable
object), with one to three CIFAR images pasted on it, each upscaled to
40-88 pixels and overlapping the others by at most IoU 0.1.  The boxes are
the pasted rectangles, written in VOC's 1-based inclusive pixel coordinates.

Only the CIFAR-10 classes that are also VOC classes are used, under their VOC
names: airplane -> aeroplane, automobile -> car, bird, cat, dog, horse,
ship -> boat (deer, frog and truck have no VOC class and are not used).
About one object in ten, among the small ones, is marked ``difficult``.
``trainval`` images come from CIFAR's training split and ``test`` images from
its test split, so test objects are unseen images.

The dataset is a function of its parameters and seed; a ``tiny_voc.json``
stamp records them and :func:`make_tiny_voc` reuses a folder whose stamp
matches.
"""

import json
import os

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, write_json, write_text

__all__ = ["CIFAR_TO_VOC", "make_tiny_voc", "tiny_voc_classes"]

#: CIFAR-10 class -> VOC class, for the CIFAR classes VOC has.
CIFAR_TO_VOC = {"airplane": "aeroplane", "automobile": "car", "bird": "bird", "cat": "cat",
                "dog": "dog", "horse": "horse", "ship": "boat"}

STAMP = "tiny_voc.json"
VERSION = 1


def tiny_voc_classes():
    """VOC names of the classes that occur in the tiny dataset (VOC order)."""
    from tools.voc_eval import VOC_CLASSES
    return [c for c in VOC_CLASSES if c in CIFAR_TO_VOC.values()]


def _paste_boxes(rng, width, height, count, min_size, max_size):
    boxes = []
    for _ in range(count):
        for _attempt in range(30):
            side = rng.integers(min_size, max_size + 1)
            aspect = rng.uniform(0.8, 1.25)
            w = int(min(width - 2, max(16, round(side * np.sqrt(aspect)))))
            h = int(min(height - 2, max(16, round(side / np.sqrt(aspect)))))
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            box = (x0, y0, x0 + w, y0 + h)  # half-open pixel rectangle
            if all(_iou(box, other) <= 0.1 for other in boxes):
                boxes.append(box)
                break
    return boxes


def _iou(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _annotation_xml(image_id, width, height, objects):
    parts = ["<annotation>",
             "\t<folder>VOC2007</folder>",
             "\t<filename>%s.jpg</filename>" % image_id,
             "\t<source>",
             "\t\t<database>nst tiny VOC (CIFAR-10 images)</database>",
             "\t</source>",
             "\t<size>",
             "\t\t<width>%d</width>" % width,
             "\t\t<height>%d</height>" % height,
             "\t\t<depth>3</depth>",
             "\t</size>",
             "\t<segmented>0</segmented>"]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts += ["\t<object>",
                  "\t\t<name>%s</name>" % name,
                  "\t\t<pose>Unspecified</pose>",
                  "\t\t<truncated>0</truncated>",
                  "\t\t<difficult>%d</difficult>" % int(difficult),
                  "\t\t<bndbox>",
                  "\t\t\t<xmin>%d</xmin>" % xmin,
                  "\t\t\t<ymin>%d</ymin>" % ymin,
                  "\t\t\t<xmax>%d</xmax>" % xmax,
                  "\t\t\t<ymax>%d</ymax>" % ymax,
                  "\t\t</bndbox>",
                  "\t</object>"]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _write_jpeg(path, rgb):
    import cv2
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), 95]):
            raise NSTError("could not write the JPEG %s" % path)


def _make_images(rng, images, labels, names, count, first_id, folder, size_range,
                 object_range, object_size, difficult_fraction):
    import cv2

    usable = np.flatnonzero(np.isin(labels, [names.index(c) for c in CIFAR_TO_VOC]))
    if len(usable) == 0:
        raise NSTError("the CIFAR data has no image of the classes %s"
                       % ", ".join(CIFAR_TO_VOC))
    records = []
    for k in range(count):
        image_id = "%06d" % (first_id + k)
        width = int(rng.integers(size_range[0][0], size_range[0][1] + 1))
        height = int(rng.integers(size_range[1][0], size_range[1][1] + 1))
        background = images[int(rng.integers(len(images)))]
        canvas = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=6)
        noise = rng.normal(0, 6, canvas.shape)
        canvas = np.clip(canvas.astype(np.float64) * 0.8 + 20 + noise, 0, 255).astype(np.uint8)
        n_obj = int(rng.integers(object_range[0], object_range[1] + 1))
        boxes = _paste_boxes(rng, width, height, n_obj, object_size[0], object_size[1])
        objects = []
        for x0, y0, x1, y1 in boxes:
            index = int(usable[rng.integers(len(usable))])
            patch = cv2.resize(images[index], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            canvas[y0:y1, x0:x1] = patch
            small = min(x1 - x0, y1 - y0) < (object_size[0] + object_size[1]) / 2
            difficult = bool(small and rng.random() < 2 * difficult_fraction)
            # VOC boxes: 1-based, inclusive corners
            objects.append((CIFAR_TO_VOC[names[labels[index]]], (x0 + 1, y0 + 1, x1, y1),
                            difficult))
        _write_jpeg(os.path.join(folder, "JPEGImages", image_id + ".jpg"), canvas)
        write_text(os.path.join(folder, "Annotations", image_id + ".xml"),
                   _annotation_xml(image_id, width, height, objects))
        records.append((image_id, objects))
    return records


def _write_imagesets(folder, splits, classes):
    main = os.path.join(folder, "ImageSets", "Main")
    for split, records in splits.items():
        write_text(os.path.join(main, split + ".txt"),
                   "".join(image_id + "\n" for image_id, _ in records))
        for cls in classes:
            lines = []
            for image_id, objects in records:
                flags = [d for name, _, d in objects if name == cls]
                flag = -1 if not flags else (0 if all(flags) else 1)
                lines.append("%s %2d\n" % (image_id, flag))
            write_text(os.path.join(main, "%s_%s.txt" % (cls, split)), "".join(lines))


def make_tiny_voc(out_dir, cifar_root, trainval=64, test=32, seed=0,
                  canvas=((176, 224), (128, 160)), objects=(1, 3), object_size=(40, 88),
                  difficult_fraction=0.1, log=None):
    """Write the tiny VOC dataset under ``out_dir/VOC2007`` (reused if already there).

    Parameters
    ----------
    out_dir : str
        The VOC root (what ``--voc-root`` takes): ``VOC2007/`` is created in it.
    cifar_root : str
        Folder holding ``cifar-10-batches-py/`` (read with
        :func:`train.data.load_cifar`).
    trainval, test : int
        Number of images of the two splits (``train``/``val`` halve ``trainval``).
    seed : int
        Everything (backgrounds, objects, positions, difficult flags) follows from it.
    canvas : ((wmin, wmax), (hmin, hmax))
        Image size range in pixels.
    objects : (min, max)
        Number of objects per image.
    object_size : (min, max)
        Side of a pasted object in pixels.

    Returns
    -------
    dict
        The stamp: parameters, classes and box counts.
    """
    from train.data import load_cifar, load_cifar_meta

    if trainval < 2 or test < 1:
        raise NSTError("the tiny VOC dataset needs at least 2 trainval and 1 test image, got "
                       "trainval=%d, test=%d" % (trainval, test))
    params = {"version": VERSION, "trainval": int(trainval), "test": int(test),
              "seed": int(seed), "canvas": [list(c) for c in canvas],
              "objects": list(objects), "object_size": list(object_size),
              "difficult_fraction": float(difficult_fraction)}
    folder = os.path.join(out_dir, "VOC2007")
    stamp_path = os.path.join(out_dir, STAMP)
    if os.path.isfile(stamp_path):
        try:
            with open(stamp_path, "r", encoding="utf-8") as handle:
                stamp = json.load(handle)
        except (OSError, ValueError):
            stamp = {}
        if stamp.get("params") == params and os.path.isdir(folder):
            return stamp
    names = load_cifar_meta(cifar_root, "cifar10")
    if log:
        log("writing the tiny VOC dataset (%d trainval + %d test CIFAR-10 images) to %s"
            % (trainval, test, folder))
    rng = np.random.default_rng(seed)
    splits = {}
    train_x, train_y = load_cifar(cifar_root, "cifar10", "train")
    test_x, test_y = load_cifar(cifar_root, "cifar10", "test")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    common = dict(size_range=canvas, object_range=objects, object_size=object_size,
                  difficult_fraction=difficult_fraction)
    records = _make_images(rng, train_x, train_y, names, trainval, 1, folder, **common)
    splits["trainval"] = records
    splits["train"] = records[: len(records) // 2]
    splits["val"] = records[len(records) // 2:]
    splits["test"] = _make_images(rng, test_x, test_y, names, test, trainval + 1, folder,
                                  **common)
    classes = tiny_voc_classes()
    _write_imagesets(folder, splits, classes)
    counts = {split: {c: sum(1 for _, objs in splits[split] for n, _, _ in objs if n == c)
                      for c in classes} for split in ("trainval", "test")}
    stamp = {"params": params, "classes": classes, "objects": counts,
             "description": "generated by detection.tiny_voc from CIFAR-10 images; "
                            "a pipeline check, not PASCAL VOC"}
    write_json(stamp_path, stamp)
    return stamp
