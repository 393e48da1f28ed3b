"""``nst pack``: an image-folder tree (one sub-folder per class) -> RecordIO files.

::

    nst pack IMAGE_DIR OUT_DIR [--val-dir DIR | --val-fraction F] [--resize 256]
             [--quality 95] [--threads N] [--seed 0]
    nst pack --verify OUT_DIR          # check every record of packed files

writes into ``OUT_DIR`` what :mod:`train.data.recordio` reads::

    train.rec / train.idx   training images, in a seeded shuffled order
    val.rec / val.idx       validation images, class by class
    classes.txt             the sorted class-folder names; line i is label i
    pack.json               counts and settings of the packing

This is MXNet's ``tools/im2rec.py`` (not shipped in the wheel) reduced to the
case at hand, with MXNet's own record tooling: images are read with OpenCV,
their shorter side resized to ``--resize`` (0 keeps the size), re-encoded as
JPEG (``--quality``) by ``mx.recordio.pack_img`` and written with
``mx.recordio.MXIndexedRecordIO`` (label = class index in the record header).
The order is deterministic: classes and files sorted by name, the training
records shuffled with ``--seed`` (MXNet's reader splits a file into contiguous
parts for ``dist_sync`` workers, so a class-sorted file would give each worker
a few classes only).  Decoding and encoding run on ``--threads`` threads.
Outputs are written under temporary names and renamed when every split is
complete, so an interrupted run leaves no half-written data set.

ImageNet: ``IMAGE_DIR`` is the training folder (``n01440764/ ...``) and
``--val-dir`` the validation folder rearranged into the same class folders
(e.g. with the usual ``valprep.sh``).  Without ``--val-dir``, a seeded
``--val-fraction`` of every class (default 0.1) is held out for validation.

:func:`make_tiny_imagenet` writes a tiny ImageNet-style folder of real JPEG
photographs for the tests and ``scripts/table3_imagenet.sh --quick``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, write_json, write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
CHUNK = 256  # images in flight per thread pool round (bounds the memory)


# ------------------------------------------------------------------ listing
def _image_files(folder):
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                files.append(os.path.join(dirpath, name))
    return files


def list_classes(image_dir):
    """Sorted class-folder names of ``image_dir``."""
    if not os.path.isdir(image_dir):
        raise NSTError("image folder %s does not exist; give a folder holding one sub-folder "
                       "of images per class (ImageNet's train/ folder)" % image_dir)
    classes = sorted(d for d in os.listdir(image_dir)
                     if os.path.isdir(os.path.join(image_dir, d)) and not d.startswith("."))
    if not classes:
        raise NSTError("%s has no class sub-folders; arrange the images as IMAGE_DIR/<class>/"
                       "<image>.jpg (one folder per class)" % image_dir)
    return classes


def list_images(image_dir, classes):
    """``[(path, label), ...]`` of every image under ``image_dir/<class>/``, sorted."""
    items = []
    for label, name in enumerate(classes):
        folder = os.path.join(image_dir, name)
        if not os.path.isdir(folder):
            continue
        items.extend((path, label) for path in _image_files(folder))
    return items


def split_items(items, val_fraction, seed):
    """Hold out a seeded ``val_fraction`` of every class (at least one image if the class
    has two or more): returns ``(train, val)``, each in listing order."""
    rng = np.random.RandomState(seed)
    by_class = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    held = set()
    for label in sorted(by_class):
        members = by_class[label]
        n_val = int(round(val_fraction * len(members)))
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        for index in rng.permutation(len(members))[:n_val]:
            held.add(members[index][0])
    return ([i for i in items if i[0] not in held], [i for i in items if i[0] in held])


# ------------------------------------------------------------------ encoding
def _load(path, resize):
    import cv2

    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if image is None or image.size == 0:
        return None
    if resize:
        h, w = image.shape[:2]
        if min(h, w) != resize:
            if h < w:
                size = (max(1, int(round(w * resize / float(h)))), resize)
            else:
                size = (resize, max(1, int(round(h * resize / float(w)))))
            inter = cv2.INTER_AREA if min(h, w) > resize else cv2.INTER_CUBIC
            image = cv2.resize(image, size, interpolation=inter)
    return image


def _encode(args):
    import mxnet as mx

    index, path, label, resize, quality = args
    image = _load(path, resize)
    if image is None:
        return None
    header = mx.recordio.IRHeader(0, float(label), index, 0)
    return mx.recordio.pack_img(header, image, quality=quality, img_fmt=".jpg")


def write_split(items, rec_path, idx_path, resize=256, quality=95, threads=4, desc="",
                progress=True):
    """Encode ``items`` into ``rec_path`` / ``idx_path``; returns (written, skipped paths)."""
    import mxnet as mx

    writer = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    skipped, written = [], 0
    bar = _progress(len(items), desc, progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            step = CHUNK * max(1, threads)
            for begin in range(0, len(items), step):
                chunk = items[begin:begin + step]
                # header id: the image's position in the listing; index keys stay
                # consecutive when an unreadable image is skipped
                jobs = [(begin + i, path, label, resize, quality)
                        for i, (path, label) in enumerate(chunk)]
                for (path, _), record in zip(chunk, pool.map(_encode, jobs)):
                    if record is None:
                        skipped.append(path)
                        continue
                    writer.write_idx(written, record)
                    written += 1
                bar.update(len(chunk))
    finally:
        writer.close()
        bar.close()
    return written, skipped


def pack(image_dir, out_dir, val_dir=None, val_fraction=None, resize=256, quality=95,
         threads=4, seed=0, progress=True, log=print):
    """Pack ``image_dir`` (and ``val_dir``) into ``out_dir``; returns the ``pack.json`` dict."""
    if val_dir is not None and val_fraction:
        raise NSTError("give either --val-dir or --val-fraction, not both")
    if val_dir is None and val_fraction is None:
        val_fraction = 0.1
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise NSTError("--val-fraction must be in [0, 1), got %g" % val_fraction)
    if not 1 <= quality <= 100:
        raise NSTError("--quality must be a JPEG quality in 1..100, got %d" % quality)
    if resize < 0:
        raise NSTError("--resize must be a size in pixels (0 keeps the images' size), got %d"
                       % resize)
    classes = list_classes(image_dir)
    items = list_images(image_dir, classes)
    present = {label for _, label in items}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise NSTError("class folder(s) %s of %s hold no images (%s); remove them or add "
                       "images" % (", ".join(empty[:5]), image_dir, "/".join(IMAGE_EXTENSIONS)))
    if val_dir is not None:
        val_classes = list_classes(val_dir)
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise NSTError("validation folder %s has class folders that %s lacks: %s; both "
                           "must use the same class names" % (val_dir, image_dir,
                                                              ", ".join(unknown[:5])))
        train_items, val_items = items, list_images(val_dir, classes)
    else:
        train_items, val_items = split_items(items, val_fraction, seed)
    if not val_items:
        raise NSTError("no validation images: pass --val-dir DIR or a --val-fraction that "
                       "holds out at least one image")
    order = np.random.RandomState(seed).permutation(len(train_items))
    train_items = [train_items[i] for i in order]

    os.makedirs(out_dir, exist_ok=True)
    stats = {"classes": len(classes), "resize": resize, "quality": quality, "seed": seed,
             "image_dir": os.path.abspath(image_dir),
             "val_dir": None if val_dir is None else os.path.abspath(val_dir),
             "val_fraction": val_fraction}
    skipped_all = []
    temps = []
    try:
        for split, split_items_ in (("train", train_items), ("val", val_items)):
            rec_tmp = _temp_name(out_dir, split + ".rec")
            idx_tmp = _temp_name(out_dir, split + ".idx")
            temps += [(rec_tmp, os.path.join(out_dir, split + ".rec")),
                      (idx_tmp, os.path.join(out_dir, split + ".idx"))]
            written, skipped = write_split(split_items_, rec_tmp, idx_tmp, resize, quality,
                                           threads, desc="pack " + split, progress=progress)
            if written == 0:
                raise NSTError("none of the %d %s images could be read; are they image files?"
                               % (len(split_items_), split))
            stats[split] = written
            skipped_all += skipped
        stats["skipped"] = skipped_all
        for tmp, final in temps:
            os.replace(tmp, final)
        temps = []
        write_text(os.path.join(out_dir, "classes.txt"), "\n".join(classes) + "\n")
        write_json(os.path.join(out_dir, "pack.json"), stats)
        _readable(os.path.join(out_dir, "classes.txt"), os.path.join(out_dir, "pack.json"))
    finally:
        for tmp, _ in temps:
            _remove(tmp)
    if skipped_all:
        log("warning: skipped %d unreadable image file(s), e.g. %s"
            % (len(skipped_all), skipped_all[0]))
    log("packed %d training and %d validation images of %d classes into %s"
        % (stats["train"], stats["val"], len(classes), out_dir))
    return stats


def _decodes(payload):
    import cv2

    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    return image is not None and image.size > 0


def decode_all(rec_path, count, threads=4, progress=True):
    """Decode every image of ``rec_path`` (in file order); NSTError at the first bad one."""
    import mxnet as mx

    from .recordio import _corrupt

    reader = mx.recordio.MXRecordIO(rec_path, "r")
    bar = _progress(count, "verify " + os.path.basename(rec_path), progress)
    index = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            while True:
                payloads = []
                for _ in range(CHUNK * max(1, threads)):
                    record = reader.read()
                    if record is None:
                        break
                    payloads.append(mx.recordio.unpack(record)[1])
                if not payloads:
                    break
                for ok in pool.map(_decodes, payloads):
                    if not ok:
                        raise _corrupt(rec_path, "record %d (in file order) holds no decodable "
                                       "image" % index)
                    index += 1
                bar.update(len(payloads))
    except mx.base.MXNetError as err:
        raise _corrupt(rec_path, "record %d (in file order) cannot be read (%s)"
                       % (index, str(err).strip().splitlines()[-1][:200])) from err
    finally:
        reader.close()
        bar.close()
    return index


def verify(out_dir, threads=4, progress=True, log=print):
    """Check every record of ``out_dir``'s splits (framing, label, image); returns
    ``{split: records}``."""
    from .recordio import SPLITS, check_recordio, read_classes, split_paths

    classes = read_classes(out_dir)
    counts = {}
    for split in SPLITS:
        rec, idx = split_paths(out_dir, split)
        counts[split] = check_recordio(rec, idx, classes=len(classes), full=True)
        decode_all(rec, counts[split], threads=threads, progress=progress)
    log("%s: %d training and %d validation records of %d classes, all intact"
        % (out_dir, counts["train"], counts["val"], len(classes)))
    return counts


def _readable(*paths):
    """Give atomically written files (created 0600) the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def _temp_name(folder, name):
    return os.path.join(folder, ".%s.tmp-%d" % (name, os.getpid()))


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _progress(total, desc, enabled):
    if enabled:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)

    class _NoBar:
        def update(self, n):
            pass

        def close(self):
            pass
    return _NoBar()


# ------------------------------------------------------------ tiny ImageNet
def _default_cifar_root():
    from pathlib import Path
    candidates = [os.environ.get("NST_SHARED_DATA"),
                  str(Path(__file__).resolve().parents[2] / "shared" / "data"), "data"]
    for root in candidates:
        if root and os.path.isfile(os.path.join(root, "cifar-10-batches-py", "data_batch_1")):
            return root
    return None


def _cifar_sources(cifar_root, classes, per_class, rng):
    """``classes`` lists of ``per_class`` RGB images, CIFAR-10 class c for class c."""
    from .cifar import load_cifar

    images, labels = load_cifar(cifar_root, "cifar10", "train")
    if classes > 10:
        raise NSTError("the tiny ImageNet from CIFAR-10 has at most 10 classes, got %d" % classes)
    out = []
    for c in range(classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise NSTError("CIFAR-10 at %s has %d images of class %d, fewer than %d"
                           % (cifar_root, len(members), c, per_class))
        out.append([images[i] for i in rng.choice(members, per_class, replace=False)])
    return out


def _photo_sources(classes, per_class, rng):
    """Crops of scikit-learn's two sample photographs: class k = one region of one photo."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 RGB
    grid = max(1, int(np.ceil(np.sqrt(classes / float(len(photos))))))
    regions = []
    for photo in photos:
        h, w = photo.shape[:2]
        for gy in range(grid):
            for gx in range(grid):
                regions.append(photo[gy * h // grid:(gy + 1) * h // grid,
                                     gx * w // grid:(gx + 1) * w // grid])
    out = []
    for c in range(classes):
        region = regions[c % len(regions)]
        h, w = region.shape[:2]
        crops = []
        for _ in range(per_class):
            side = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.randint(0, h - side + 1), rng.randint(0, w - side + 1)
            crop = region[y:y + side, x:x + side]
            crops.append(crop[:, ::-1] if rng.rand() < 0.5 else crop)
        out.append(crops)
    return out


def make_tiny_imagenet(out_dir, classes=4, per_class=12, size=64, seed=0, cifar_root=None,
                       source="auto"):
    """Write a tiny ImageNet-style image folder: ``out_dir/n0000000k/n0000000k_j.JPEG``.

    The images are real photographs: CIFAR-10 training images (class k =
    CIFAR-10 class k) upscaled to ``size`` x ``size`` when the CIFAR-10 folder is
    found (``cifar_root``, ``$NST_SHARED_DATA`` or ``../shared/data``), else
    crops of scikit-learn's two sample photographs (class k = a region of one
    photo), which ship with scikit-learn.  ``source`` forces ``"cifar"`` or
    ``"photos"``.  Deterministic for a ``seed``; returns ``out_dir``.
    """
    import cv2

    rng = np.random.RandomState(seed)
    if source not in ("auto", "cifar", "photos"):
        raise NSTError("source must be auto, cifar or photos, got %r" % (source,))
    root = cifar_root or (_default_cifar_root() if source != "photos" else None)
    if source == "cifar" and root is None:
        raise NSTError("no CIFAR-10 folder found for the tiny ImageNet; pass cifar_root")
    if root is not None and source != "photos":
        sources = _cifar_sources(root, classes, per_class, rng)
    else:
        sources = _photo_sources(classes, per_class, rng)
    for c, images in enumerate(sources):
        wnid = "n%08d" % c
        folder = os.path.join(out_dir, wnid)
        os.makedirs(folder, exist_ok=True)
        for j, image in enumerate(images):
            resized = cv2.resize(np.ascontiguousarray(image), (size, size),
                                 interpolation=cv2.INTER_CUBIC)
            ok, data = cv2.imencode(".jpg", resized[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise NSTError("could not encode a JPEG for the tiny ImageNet")
            path = os.path.join(folder, "%s_%d.JPEG" % (wnid, j))
            with atomic_path(path) as tmp:
                data.tofile(tmp)
    return out_dir


# ------------------------------------------------------------------ nst pack
def add_arguments(parser):
    parser.add_argument("image_dir", nargs="?",
                        help="folder with one sub-folder of images per class (ImageNet train/)")
    parser.add_argument("out_dir", nargs="?",
                        help="output folder: train.rec/.idx, val.rec/.idx, classes.txt")
    parser.add_argument("--val-dir", default=None,
                        help="validation images in the same class sub-folders (ImageNet val/ "
                             "arranged by class)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="without --val-dir: hold out this fraction of every class "
                             "(default 0.1)")
    parser.add_argument("--resize", type=int, default=256,
                        help="resize the shorter side to this many pixels (0: keep; default 256)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="decoding/encoding threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the training-record order and of --val-fraction")
    parser.add_argument("--verify", metavar="DIR", default=None,
                        help="instead of packing, check every record (framing, label, image) "
                             "of the packed folder DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    if args.verify:
        verify(args.verify, threads=args.threads, progress=not args.no_progress)
        return 0
    if not args.image_dir or not args.out_dir:
        raise NSTError("give IMAGE_DIR and OUT_DIR, e.g. nst pack ~/ILSVRC2012/train "
                       "data/imagenet --val-dir ~/ILSVRC2012/val (or --verify DIR)")
    pack(args.image_dir, args.out_dir, val_dir=args.val_dir, val_fraction=args.val_fraction,
         resize=args.resize, quality=args.quality, threads=args.threads, seed=args.seed,
         progress=not args.no_progress)
    return 0


def main(argv=None):
    """``python -m train.data.pack ...``: the same as ``nst pack ...``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="nst pack", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NSTError as err:
        print("nst pack: error: %s" % err, file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
