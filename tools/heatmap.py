"""``nst heatmap``: activation heat maps of chosen neurons over input images (the paper's Fig. 2).

For one network checkpoint (a run folder or a .params file with ``--net``),
one layer and a set of channels, each cell of the grid (rows = images,
columns = channels) shows the input image with the channel's activation map
on top: the map is upsampled **bilinearly** (half-pixel centres) to the image
size and drawn with a colour map (``--cmap``, default ``jet``) at opacity
``--alpha``.  The images are the first ``--images`` of the split (or
``--index``), normalised for the network as in training and denormalised
again for display.

Channels: ``--channel K [K ...]``, or the ``--top-k`` most active ones (the
largest mean activation over the shown images and positions; default 4).
The layer defaults to the run's NST student layer, else the network's last
feature (``--layer`` to choose; an unknown name lists the known ones).

Colour scale (``--scale``): ``channel`` (default) maps each channel's minimum
and maximum over the shown images to the ends of the colour map, so the rows
of a column compare; ``image`` rescales every cell on its own.  The JSON next
to the PNG holds the channel indices, each channel's activation statistics
(mean, min, max, per image with the position of the maximum in feature-map
coordinates) and the settings.

The PNG's pixel size is fixed by the grid: ``LEFT + cols*cell + (cols-1)*GAP
+ RIGHT`` by ``TOP + rows*cell + (rows-1)*GAP + BOTTOM`` (:func:`figure_pixels`).
"""

import os

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, write_json

from .features import (ModelSpec, denormalise, extract, load_images, load_network,
                       read_run_config, resolve_path, spec_from_run)

__all__ = ["make_heatmap_figure", "figure_pixels", "upsample", "add_arguments", "run"]

DPI = 100
LEFT, TOP, RIGHT, BOTTOM, GAP = 72, 48, 8, 8, 4    # pixels


def figure_pixels(rows, cols, cell):
    """(height, width) in pixels of a grid of ``rows`` x ``cols`` cells of ``cell`` pixels."""
    width = LEFT + cols * cell + (cols - 1) * GAP + RIGHT
    height = TOP + rows * cell + (rows - 1) * GAP + BOTTOM
    return height, width


def upsample(maps, size):
    """Bilinear (half-pixel centres) resize of (..., h, w) maps to ``size`` = (H, W)."""
    import cv2

    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape((-1,) + maps.shape[-2:])
    out = np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                    for m in flat])
    return out.reshape(maps.shape[:-2] + tuple(size))


def _class_names(dataset, root):
    if dataset == "digits":
        return ["digit %d" % i for i in range(10)]
    try:
        from train.data import load_cifar_meta
        return load_cifar_meta(root, dataset)
    except NSTError:
        return None


def _resolve_model(model, net=None, width=None, classes=None):
    if isinstance(model, ModelSpec):
        return model, None
    if model and os.path.isdir(model):
        spec = spec_from_run(model)
        if net and net != spec.network:
            raise NSTError("%s is a run of %s; --net %s contradicts it (drop --net)"
                           % (model, spec.network, net))
        return spec, read_run_config(model)
    if model and os.path.isfile(model):
        if not net:
            raise NSTError("%s is a .params file: also give its network with --net NAME (and "
                           "--width), or pass the run folder instead" % model)
        return ModelSpec(network=net, checkpoint=model,
                         params={} if width is None else {"width": float(width)},
                         classes=classes, label=os.path.basename(model)), None
    raise NSTError("checkpoint %s does not exist; give a run folder (e.g. runs/demo/nst_poly) "
                   "or a .params file with --net" % model)


def make_heatmap_figure(model, out_png, net=None, width=None, classes=None, layer=None,
                        channels=None, top_k=4, images=4, indices=None, dataset=None, root=None,
                        split="test", alpha=0.5, cmap="jet", cell=128, scale="channel",
                        json_path=None, log=print):
    """Write the Fig. 2 grid PNG and its JSON; returns the JSON dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 0.0 <= alpha <= 1.0:
        raise NSTError("--alpha must be between 0 and 1, got %g" % alpha)
    if cell < 16:
        raise NSTError("--cell must be at least 16 pixels, got %d" % cell)
    if scale not in ("channel", "image"):
        raise NSTError("--scale must be channel or image, not %r" % scale)
    if cmap not in plt.colormaps():
        raise NSTError("unknown colour map %r; e.g. jet, inferno, viridis, magma" % cmap)
    spec, cfg = _resolve_model(model, net, width, classes)
    data_cfg = (cfg or {}).get("data") or {}
    dataset = dataset or data_cfg.get("dataset") or "digits"
    if dataset not in ("cifar10", "cifar100", "digits"):
        raise NSTError("nst heatmap reads cifar10, cifar100 or digits images, not %r: pass "
                       "--dataset" % dataset)
    if root is None and data_cfg.get("root") and data_cfg.get("dataset") == dataset:
        root = resolve_path(data_cfg["root"], spec.run, cfg) or data_cfg["root"]
    from train.data import dataset_info
    if spec.classes is None:
        spec.classes = dataset_info(dataset)["num_classes"]

    if layer:
        spec.feature = layer
    if not spec.feature:
        import symbols
        spec.feature = symbols.get_model(spec.network, classes=spec.classes,
                                         **spec.params).feature_names[-1]
    if channels is None and (top_k is None or top_k < 1):
        raise NSTError("--top-k must be at least 1, got %r" % top_k)

    shown, labels, chosen, data, mean, std = load_images(dataset, root, split, images, indices)
    feat = extract(load_network(spec, [spec.feature]), data)[0]          # (N, C, h, w)
    if feat.ndim != 4:
        raise NSTError("layer %s of %s is not a feature map (shape %s); choose a convolutional "
                       "layer" % (spec.feature, spec.network, feat.shape[1:]))
    n_channels = feat.shape[1]
    mean_act = feat.mean(axis=(0, 2, 3))
    if channels is not None:
        channels = [int(k) for k in channels]
        bad = [k for k in channels if not 0 <= k < n_channels]
        if bad:
            raise NSTError("channel %d is out of range: layer %s of %s has %d channels "
                           "(0..%d)" % (bad[0], spec.feature, spec.network, n_channels,
                                        n_channels - 1))
        how = "chosen"
    else:
        channels = [int(k) for k in np.argsort(-mean_act, kind="stable")[:top_k]]
        how = "top-%d by mean activation" % len(channels)

    display = denormalise(data, mean, std)                                # (N, H, W, 3)
    size = display.shape[1:3]
    heat = upsample(feat[:, channels], size)                             # (N, K, H, W)
    if scale == "channel":
        lo = heat.min(axis=(0, 2, 3), keepdims=True)
        hi = heat.max(axis=(0, 2, 3), keepdims=True)
    else:
        lo = heat.min(axis=(2, 3), keepdims=True)
        hi = heat.max(axis=(2, 3), keepdims=True)
    unit = (heat - lo) / np.maximum(hi - lo, 1e-12)

    rows, cols = len(chosen), len(channels)
    height, width_px = figure_pixels(rows, cols, cell)
    # +0.25 px: the canvas size is truncated to whole pixels; keep it exact
    fig = plt.figure(figsize=((width_px + 0.25) / DPI, (height + 0.25) / DPI), dpi=DPI)
    names = _class_names(dataset, root)
    for r in range(rows):
        for c in range(cols):
            x0 = LEFT + c * (cell + GAP)
            y0 = height - TOP - (r + 1) * cell - r * GAP
            ax = fig.add_axes([x0 / width_px, y0 / height, cell / width_px, cell / height])
            ax.imshow(display[r], interpolation="nearest")
            ax.imshow(unit[r, c], cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0,
                      interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("ch %d\nmean %.3g" % (channels[c], mean_act[channels[c]]),
                             fontsize=8, pad=2)
            if c == 0:
                label = int(labels[r])
                text = names[label] if names and label < len(names) else str(label)
                ax.set_ylabel("#%d\n%s" % (chosen[r], text), fontsize=8, rotation=0,
                              ha="right", va="center", labelpad=4)
    title = "%s %s (%s), %s %s" % (spec.network, spec.feature, how, dataset, split)
    # shrink the title to the figure's width (a character is ~0.55 em wide)
    size = min(8.0, 0.95 * width_px / (0.55 * len(title) * DPI / 72.0))
    fig.text(0.5, 1.0 - 4.0 / height, title, ha="center", va="top", fontsize=size)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)

    stats = []
    for k in channels:
        maps = feat[:, k]
        per_image = []
        for i in range(rows):
            pos = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
            per_image.append({"index": chosen[i], "mean": float(maps[i].mean()),
                              "max": float(maps[i].max()), "min": float(maps[i].min()),
                              "argmax": [int(pos[0]), int(pos[1])]})
        stats.append({"channel": k, "mean": float(maps.mean()), "max": float(maps.max()),
                      "min": float(maps.min()), "images": per_image})
    result = {"figure": out_png, "model": spec.describe(), "layer": spec.feature,
              "layer_shape": list(feat.shape[1:]), "channels": channels, "selection": how,
              "stats": stats,
              "images": {"dataset": dataset, "split": split, "indices": chosen,
                         "labels": [int(v) for v in labels]},
              "settings": {"alpha": alpha, "cmap": cmap, "cell": cell, "scale": scale,
                           "upsampling": "bilinear, half-pixel centres"},
              "size_px": [height, width_px]}
    json_path = json_path or os.path.splitext(out_png)[0] + ".json"
    write_json(json_path, result)
    log("nst heatmap: %s %s channels %s over %d %s images; written %s, %s"
        % (spec.network, spec.feature, channels, rows, dataset, out_png, json_path))
    return result


def add_arguments(parser):
    parser.description = (
        "Activation heat maps (the paper's Fig. 2): chosen channels of one layer, upsampled "
        "bilinearly and overlaid on input images; rows = images, columns = channels.")
    parser.add_argument("model", metavar="RUN_OR_PARAMS",
                        help="run folder (network, width, layer from its config) or .params file "
                             "(with --net)")
    parser.add_argument("--net", default=None, help="network of a .params file")
    parser.add_argument("--width", type=float, default=None, help="width of a .params network")
    parser.add_argument("--classes", type=int, default=None,
                        help="classes of a .params network (default: the data set's)")
    parser.add_argument("--layer", default=None,
                        help="feature name (default: the run's NST layer, else the last one)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--channel", type=int, nargs="+", default=None, metavar="K",
                      help="channel index(es) to show")
    pick.add_argument("--top-k", type=int, default=4,
                      help="show the K most active channels (default 4)")
    parser.add_argument("--images", type=int, default=4,
                        help="number of images, the first of the split (default 4)")
    parser.add_argument("--index", type=int, nargs="+", default=None,
                        help="image indices in the split instead of the first --images")
    parser.add_argument("--dataset", default=None, choices=("cifar10", "cifar100", "digits"),
                        help="images (default: the run's data set, else digits)")
    parser.add_argument("--root", default=None, help="data folder of CIFAR")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--alpha", type=float, default=0.5, help="heat map opacity (0.5)")
    parser.add_argument("--cmap", default="jet", help="matplotlib colour map (jet)")
    parser.add_argument("--scale", default="channel", choices=("channel", "image"),
                        help="colour scale per channel over the images (default) or per cell")
    parser.add_argument("--cell", type=int, default=128, help="cell size in pixels (128)")
    parser.add_argument("-o", "--out", default="heatmap.png", help="output PNG")
    parser.add_argument("--json", default=None, help="output JSON (default: OUT with .json)")


def run(args):
    make_heatmap_figure(args.model, args.out, net=args.net, width=args.width,
                        classes=args.classes, layer=args.layer, channels=args.channel,
                        top_k=args.top_k, images=args.images, indices=args.index,
                        dataset=args.dataset, root=args.root, split=args.split, alpha=args.alpha,
                        cmap=args.cmap, cell=args.cell, scale=args.scale, json_path=args.json)
    return 0
