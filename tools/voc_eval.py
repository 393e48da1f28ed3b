"""PASCAL VOC detection evaluation: ``nst voc-eval``.

Scores detections against a VOC annotation folder and an image-set file and
prints the per-class average precision (AP) and the mean AP (mAP), as the
official VOC devkit (``VOCevaldet.m``) and GluonCV's ``VOCMApMetric`` /
``VOC07MApMetric`` do:

* a detection is matched to the ground-truth box of its class, in the same
  image, with the largest intersection-over-union (IoU); boxes are integer
  pixel boxes whose corners are inclusive, so widths and heights are
  ``xmax - xmin + 1`` (the devkit's "+1" convention);
* detections are visited in decreasing score over the whole image set; a
  detection whose best IoU is >= 0.5 (``--iou``) is a true positive if that
  box is not yet taken, a false positive if it is (a duplicate); a detection
  whose best IoU is below the threshold is a false positive;
* ``difficult`` boxes do not count as positives, and a detection matched to
  one is ignored (neither a true nor a false positive);
* ``--metric voc07`` (default, the paper's): the VOC2007 11-point AP, the mean
  over recall thresholds 0, 0.1, ..., 1 of the maximum precision at a recall
  >= the threshold; ``--metric voc10``: the area under the monotone
  (interpolated) precision/recall curve, the VOC2010+ definition;
* a class without any non-difficult ground truth has no AP (``null``) and is
  left out of the mAP, as in GluonCV.

The results equal GluonCV's ``VOC07MApMetric`` (``voc07``) and
``VOCMApMetric`` (``voc10``) fed the same boxes (``tests/test_voc_eval.py``)
**as long as no two detections of a class in different images have exactly
the same score**.  On such a cross-image tie this tool visits the detections
in file order (the order of the result file's lines or the JSON rows, with a
stable sort), as the devkit does (MATLAB's stable ``sort(-confidence)``);
GluonCV sorts with ``argsort()[::-1]``, which reverses tied detections (for
short lists; NumPy's default sort is not stable in general), so a tie
between a true and a false positive can give a different AP
(``test_cross_image_score_ties_keep_file_order_as_the_devkit_gluoncv_reverses_them``).
Scores written with 6 decimals (the JSON and devkit files) can tie where the
detector's float32 scores did not.

Detections are read from either

* a folder of VOC devkit result files, one per class, ``<prefix><class>.txt``
  (e.g. ``comp4_det_test_aeroplane.txt``), each line
  ``image_id score xmin ymin xmax ymax`` in the 1-based pixel coordinates of
  the annotation XML; the prefix is detected (``--prefix`` to force it); or
* the JSON file ``nst detect`` writes (:func:`write_detections_json`):
  ``{"format": "nst-voc-detections/1", "classes": [...],
  "detections": {class: [[image_id, score, xmin, ymin, xmax, ymax], ...]}}``,
  also in 1-based annotation coordinates.

Annotations are read with the standard library's expat parser; a file with a
``<!DOCTYPE`` or an entity declaration is refused (VOC files never have one),
so entity-expansion and external-entity attacks cannot happen.  Every problem
(malformed XML, a missing annotation file, an image id that is not in the
image set, an empty detections folder, a bad line) is one
:class:`~nst.errors.NSTError` naming the file and the line.
"""

import json
import math
import os
import re
import sys
from xml.parsers import expat

import numpy as np

from nst.errors import NSTError

__all__ = ["VOC_CLASSES", "parse_annotation", "read_imageset", "load_ground_truth",
           "read_detections", "read_detection_files", "read_detections_json",
           "write_detections_json", "write_devkit_files", "evaluate",
           "average_precision", "format_results", "add_arguments", "run"]

#: The 20 PASCAL VOC classes, in the devkit's (and GluonCV's) order.
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")

JSON_FORMAT = "nst-voc-detections/1"
METRICS = ("voc07", "voc10")
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


# ---------------------------------------------------------------------------
# XML
# ---------------------------------------------------------------------------

class XmlNode:
    """A parsed XML element: ``tag``, ``text`` (stripped), ``children``, ``line``."""

    __slots__ = ("tag", "text", "children", "line")

    def __init__(self, tag, line):
        self.tag = tag
        self.text = ""
        self.children = []
        self.line = line

    def find(self, tag):
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag):
        return [child for child in self.children if child.tag == tag]


def _refuse(kind, path):
    def handler(*_args):
        raise NSTError("refusing to parse %s: it declares %s, which a VOC annotation never "
                       "has (it could expand entities or read other files); regenerate the "
                       "file or restore it from the original dataset" % (path, kind))
    return handler


def parse_xml(path):
    """Parse ``path`` into an :class:`XmlNode` tree (root element), safely.

    DOCTYPE and entity declarations are refused before and during parsing.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise NSTError("annotation file %s does not exist; check --annotations (the VOC "
                       "Annotations/ folder) and the image-set file" % path) from None
    except OSError as err:
        raise NSTError("cannot read annotation file %s (%s)" % (path, err.strerror or err)) \
            from err
    match = _FORBIDDEN.search(data)
    if match:
        line = data.count(b"\n", 0, match.start()) + 1
        raise NSTError("refusing to parse %s line %d: it has a <!%s> declaration, which a VOC "
                       "annotation never has (it could expand entities or read other files); "
                       "regenerate the file or restore it from the original dataset"
                       % (path, line, match.group(1).decode().upper()))
    parser = expat.ParserCreate()
    stack, roots = [], []

    def start(tag, _attrs):
        node = XmlNode(tag, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            roots.append(node)
        stack.append(node)

    def end(_tag):
        node = stack.pop()
        node.text = node.text.strip()

    def chars(text):
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE", path)
    parser.EntityDeclHandler = _refuse("an entity", path)
    parser.UnparsedEntityDeclHandler = _refuse("an entity", path)
    parser.ExternalEntityRefHandler = _refuse("an external entity", path)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise NSTError("annotation file %s is not well-formed XML (line %d, column %d: %s); "
                       "regenerate the file or restore it from the original dataset"
                       % (path, err.lineno, err.offset + 1, expat.ErrorString(err.code))) \
            from None
    if not roots:
        raise NSTError("annotation file %s is empty; restore it from the original dataset"
                       % path)
    return roots[0]


def _number(node, tag, path, what):
    child = node.find(tag)
    if child is None:
        raise NSTError("annotation file %s line %d: %s has no <%s>; every VOC object needs "
                       "<bndbox> with xmin, ymin, xmax and ymax" % (path, node.line, what, tag))
    try:
        value = float(child.text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise NSTError("annotation file %s line %d: <%s> of %s must be a number, got %r"
                       % (path, child.line, tag, what, child.text))
    return value


def parse_annotation(path):
    """Read one VOC annotation file.

    Returns ``{"width", "height", "objects": [{"name", "bbox", "difficult",
    "line"}, ...]}`` with ``bbox = (xmin, ymin, xmax, ymax)`` in the file's
    1-based coordinates, ``name`` lower-cased and stripped, ``difficult`` a bool
    (a missing or non-integer ``<difficult>`` means 0, as in GluonCV), and
    ``width``/``height`` None when ``<size>`` is absent.
    """
    root = parse_xml(path)
    if root.tag != "annotation":
        raise NSTError("annotation file %s line %d: the root element is <%s>, expected "
                       "<annotation>; is this a VOC annotation?" % (path, root.line, root.tag))
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width = _number(size, "width", path, "<size>")
        height = _number(size, "height", path, "<size>")
    objects = []
    for obj in root.findall("object"):
        name_node = obj.find("name")
        if name_node is None or not name_node.text:
            raise NSTError("annotation file %s line %d: <object> has no <name>; every VOC "
                           "object needs a class name" % (path, obj.line))
        name = name_node.text.strip().lower()
        box = obj.find("bndbox")
        if box is None:
            raise NSTError("annotation file %s line %d: object %r has no <bndbox>"
                           % (path, obj.line, name))
        what = "object %r" % name
        bbox = tuple(_number(box, tag, path, what) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.find("difficult")
        try:
            flag = bool(int(difficult.text)) if difficult is not None else False
        except ValueError:
            flag = False
        objects.append({"name": name, "bbox": bbox, "difficult": flag, "line": obj.line})
    return {"width": width, "height": height, "objects": objects}


# ---------------------------------------------------------------------------
# Image sets and ground truth
# ---------------------------------------------------------------------------

def read_imageset(path):
    """Image ids of a VOC image-set file (``ImageSets/Main/test.txt``), in file order.

    One id per line; a per-class file (``id flag``) is accepted too (the id is
    the first field).  Blank lines are skipped.
    """
    try:
        with open(path, "r", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise NSTError("image-set file %s does not exist; pass the VOC file listing the "
                       "evaluated images, e.g. VOC2007/ImageSets/Main/test.txt" % path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise NSTError("cannot read image-set file %s (%s)" % (path, err)) from err
    ids, seen = [], {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise NSTError("image-set file %s line %d: expected one image id per line, got %r"
                           % (path, number, line))
        if fields[0] in seen:
            raise NSTError("image-set file %s line %d: image %r is listed twice (first on line "
                           "%d)" % (path, number, fields[0], seen[fields[0]]))
        seen[fields[0]] = number
        ids.append(fields[0])
    if not ids:
        raise NSTError("image-set file %s lists no images" % path)
    return ids


def load_ground_truth(annotation_dir, image_ids, classes, imageset=None):
    """Ground truth of ``image_ids`` for ``classes``.

    Returns ``{class: {image_id: (boxes float64 (M, 4), difficult bool (M,))}}``
    for every image of the set (empty arrays where an image has no box of that
    class).  Objects of other classes are ignored.
    """
    if not os.path.isdir(annotation_dir):
        raise NSTError("annotation folder %s does not exist; pass the VOC Annotations/ folder, "
                       "e.g. VOCdevkit/VOC2007/Annotations" % annotation_dir)
    index = {c: i for i, c in enumerate(classes)}
    gts = {c: {} for c in classes}
    for image_id in image_ids:
        path = os.path.join(annotation_dir, image_id + ".xml")
        if not os.path.isfile(path):
            where = " (listed in %s)" % imageset if imageset else ""
            raise NSTError("annotation file %s does not exist for image %r%s; check "
                           "--annotations and --imageset" % (path, image_id, where))
        boxes = {c: [] for c in classes}
        difficult = {c: [] for c in classes}
        for obj in parse_annotation(path)["objects"]:
            if obj["name"] in index:
                boxes[obj["name"]].append(obj["bbox"])
                difficult[obj["name"]].append(obj["difficult"])
        for c in classes:
            gts[c][image_id] = (np.asarray(boxes[c], dtype=np.float64).reshape(-1, 4),
                                np.asarray(difficult[c], dtype=bool))
    return gts


# ---------------------------------------------------------------------------
# Detections
# ---------------------------------------------------------------------------

def _empty_dets():
    return {"image_ids": [], "scores": [], "boxes": []}


def _finish_dets(raw):
    return {"image_ids": list(raw["image_ids"]),
            "scores": np.asarray(raw["scores"], dtype=np.float64).reshape(-1),
            "boxes": np.asarray(raw["boxes"], dtype=np.float64).reshape(-1, 4)}


def _check_det(path, where, image_id, values, known_ids):
    if known_ids is not None and image_id not in known_ids:
        raise NSTError("%s %s: image %r is not in the image set; the detections must come "
                       "from the images of --imageset (check that the files belong to this "
                       "split)" % (path, where, image_id))
    if not all(math.isfinite(v) for v in values):
        raise NSTError("%s %s: the score and box of image %r must be finite numbers, got %s"
                       % (path, where, image_id, values))


def _parse_det_line(path, number, line, known_ids):
    fields = line.split()
    if len(fields) != 6:
        raise NSTError("%s line %d: expected 'image_id score xmin ymin xmax ymax' (6 fields), "
                       "got %d: %r" % (path, number, len(fields), line.strip()))
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise NSTError("%s line %d: score and box must be numbers in 'image_id score xmin ymin "
                       "xmax ymax', got %r" % (path, number, line.strip())) from None
    _check_det(path, "line %d" % number, fields[0], values, known_ids)
    return fields[0], values


def _detect_prefix(names, classes):
    """The prefix P such that the most files are named ``P<class>.txt``."""
    counts = {}
    for name in names:
        for cls in classes:
            suffix = cls + ".txt"
            if name.endswith(suffix):
                prefix = name[:-len(suffix)]
                counts.setdefault(prefix, set()).add(cls)
    if not counts:
        return None
    return max(counts, key=lambda p: (len(counts[p]), len(p)))


def read_detection_files(folder, classes, image_ids=None, prefix=None):
    """Read a folder of devkit result files ``<prefix><class>.txt``.

    Returns ``({class: {"image_ids", "scores", "boxes"}}, info)`` where
    ``info`` holds the prefix and the classes without a file (no detections).
    """
    if not os.path.isdir(folder):
        raise NSTError("detections folder %s does not exist" % folder)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".txt"))
    if prefix is None:
        prefix = _detect_prefix(names, classes)
    if prefix is None or not any((prefix + c + ".txt") in names for c in classes):
        raise NSTError("detections folder %s holds no result file: expected one file per "
                       "class named <prefix><class>.txt (e.g. comp4_det_test_aeroplane.txt) "
                       "with lines 'image_id score xmin ymin xmax ymax'" % folder)
    known = set(image_ids) if image_ids is not None else None
    dets, missing = {}, []
    for cls in classes:
        path = os.path.join(folder, prefix + cls + ".txt")
        raw = _empty_dets()
        if not os.path.isfile(path):
            missing.append(cls)
            dets[cls] = _finish_dets(raw)
            continue
        try:
            with open(path, "r", encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise NSTError("cannot read detections file %s (%s)" % (path, err)) from err
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            image_id, values = _parse_det_line(path, number, line, known)
            raw["image_ids"].append(image_id)
            raw["scores"].append(values[0])
            raw["boxes"].append(values[1:])
        dets[cls] = _finish_dets(raw)
    return dets, {"prefix": prefix, "missing_classes": missing}


def read_detections_json(path, classes=None, image_ids=None):
    """Read the detections JSON of :func:`write_detections_json`.

    Returns ``(dets, info)`` like :func:`read_detection_files`; ``info["classes"]``
    is the file's class list.
    """
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise NSTError("detections file %s does not exist" % path) from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise NSTError("detections file %s is not valid JSON (%s); write it with "
                       "`nst detect eval` or give a folder of devkit .txt files"
                       % (path, err)) from err
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT \
            or not isinstance(data.get("detections"), dict):
        raise NSTError("detections file %s is not in the %r format: expected {\"format\": %r, "
                       "\"classes\": [...], \"detections\": {class: [[image_id, score, xmin, "
                       "ymin, xmax, ymax], ...]}}" % (path, JSON_FORMAT, JSON_FORMAT))
    file_classes = data.get("classes") or sorted(data["detections"])
    classes = list(classes or file_classes)
    known = set(image_ids) if image_ids is not None else None
    unknown = sorted(set(data["detections"]) - set(file_classes))
    if unknown:
        raise NSTError("detections file %s has detections of %s, which are not in its "
                       "'classes' list" % (path, ", ".join(map(repr, unknown))))
    dets, missing = {}, []
    for cls in classes:
        rows = data["detections"].get(cls)
        raw = _empty_dets()
        if rows is None:
            missing.append(cls)
        elif not isinstance(rows, list):
            raise NSTError("detections file %s: detections[%r] must be a list of [image_id, "
                           "score, xmin, ymin, xmax, ymax]" % (path, cls))
        for number, row in enumerate(rows or (), 1):
            where = "detections[%r][%d]" % (cls, number - 1)
            if (not isinstance(row, list) or len(row) != 6 or not isinstance(row[0], str)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in row[1:])):
                raise NSTError("detections file %s %s: expected [image_id, score, xmin, ymin, "
                               "xmax, ymax] with a string id and numbers, got %r"
                               % (path, where, row))
            values = [float(v) for v in row[1:]]
            _check_det(path, where, row[0], values, known)
            raw["image_ids"].append(row[0])
            raw["scores"].append(values[0])
            raw["boxes"].append(values[1:])
        dets[cls] = _finish_dets(raw)
    return dets, {"prefix": None, "missing_classes": missing, "classes": file_classes}


def read_detections(path, classes=None, image_ids=None, prefix=None):
    """Detections from a devkit folder or a JSON file (see the module docstring)."""
    if os.path.isdir(path):
        return read_detection_files(path, list(classes or VOC_CLASSES), image_ids, prefix)
    if os.path.isfile(path):
        return read_detections_json(path, classes, image_ids)
    raise NSTError("detections %s do not exist: pass a folder of <prefix><class>.txt files "
                   "or the detections JSON written by `nst detect eval`" % path)


def _sorted_rows(dets, cls):
    rows = dets.get(cls)
    if rows is None:
        return []
    order = np.argsort(-np.asarray(rows["scores"]), kind="mergesort")
    return [(rows["image_ids"][i], float(rows["scores"][i]),
             [float(v) for v in rows["boxes"][i]]) for i in order]


def write_detections_json(path, dets, classes, meta=None):
    """Atomically write detections as the JSON that ``nst voc-eval`` reads.

    ``dets`` is ``{class: {"image_ids": [...], "scores": (N,), "boxes": (N, 4)}}``
    with boxes in 1-based annotation coordinates.
    """
    from nst.io import write_text

    body = {}
    for cls in classes:
        body[cls] = [[image_id, round(score, 6)] + [round(v, 3) for v in box]
                     for image_id, score, box in _sorted_rows(dets, cls)]
    out = {"format": JSON_FORMAT, "classes": list(classes),
           "coordinates": "VOC pixels, 1-based and inclusive, as in the annotation XML"}
    out.update(meta or {})
    out["detections"] = body
    # one detection per line keeps the file readable and diff-able
    lines = ['{']
    head = {k: v for k, v in out.items() if k != "detections"}
    for key, value in head.items():
        lines.append("  %s: %s," % (json.dumps(key), json.dumps(value)))
    lines.append('  "detections": {')
    for c_index, cls in enumerate(classes):
        rows = body[cls]
        end = "," if c_index + 1 < len(classes) else ""
        if not rows:
            lines.append("    %s: []%s" % (json.dumps(cls), end))
            continue
        lines.append("    %s: [" % json.dumps(cls))
        for r_index, row in enumerate(rows):
            lines.append("      %s%s" % (json.dumps(row), "," if r_index + 1 < len(rows) else ""))
        lines.append("    ]%s" % end)
    lines.append("  }")
    lines.append("}")
    write_text(path, "\n".join(lines) + "\n")


def write_devkit_files(folder, dets, classes, prefix="comp4_det_test_"):
    """Atomically write the devkit result files ``<folder>/<prefix><class>.txt``.

    One line per detection, ``image_id score xmin ymin xmax ymax``, sorted by
    decreasing score, boxes in 1-based annotation coordinates to 0.001 pixel.
    """
    from nst.io import write_text

    for cls in classes:
        lines = ["%s %.6f %.3f %.3f %.3f %.3f" % ((image_id, score) + tuple(box))
                 for image_id, score, box in _sorted_rows(dets, cls)]
        write_text(os.path.join(folder, prefix + cls + ".txt"),
                   "\n".join(lines) + ("\n" if lines else ""))


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

def average_precision(recall, precision, metric="voc07"):
    """AP of a precision/recall curve (arrays in detection order).

    ``voc07``: 11-point interpolated AP (VOC2007 devkit); ``voc10``: area under
    the interpolated curve (VOC2010+ devkit).  NaN precisions (no detection
    counted yet) are taken as 0, as in GluonCV.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.nan_to_num(np.asarray(precision, dtype=np.float64))
    if metric == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = recall >= t
            ap += (np.max(precision[above]) if above.any() else 0.0) / 11.0
        return float(ap)
    if metric == "voc10":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    raise NSTError("unknown metric %r; choose voc07 (11-point, VOC2007) or voc10 (area under "
                   "the curve, VOC2010+)" % (metric,))


def _iou_plus_one(box, gts):
    """IoU of one box with each row of ``gts`` under the devkit's +1 convention."""
    ixmin = np.maximum(gts[:, 0], box[0])
    iymin = np.maximum(gts[:, 1], box[1])
    ixmax = np.minimum(gts[:, 2], box[2])
    iymax = np.minimum(gts[:, 3], box[3])
    iw = ixmax - ixmin + 1.0
    ih = iymax - iymin + 1.0
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def evaluate_class(dets, gts, iou_thresh=0.5, metric="voc07"):
    """AP of one class.

    ``dets``: ``{"image_ids", "scores", "boxes"}``; ``gts``: ``{image_id: (boxes,
    difficult)}``.  Returns ``(ap or None, details)``; ``ap`` is None when the
    class has no non-difficult ground truth.
    """
    n_pos = int(sum(int((~difficult).sum()) for _, difficult in gts.values()))
    scores = np.asarray(dets["scores"], dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    taken = {image_id: np.zeros(len(boxes), dtype=bool) for image_id, (boxes, _) in gts.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, index in enumerate(order):
        image_id = dets["image_ids"][index]
        boxes, difficult = gts.get(image_id, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(boxes) == 0:
            fp[rank] = 1
            continue
        ious = _iou_plus_one(dets["boxes"][index], boxes)
        best = int(np.argmax(ious))
        if ious[best] >= iou_thresh:
            if difficult[best]:
                continue  # ignored: neither a true nor a false positive
            if not taken[image_id][best]:
                tp[rank] = 1
                taken[image_id][best] = True
            else:
                fp[rank] = 1  # duplicate detection
        else:
            fp[rank] = 1
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(fp)
    details = {"n_pos": n_pos, "n_det": int(len(order)), "tp": int(tp.sum()),
               "fp": int(fp.sum())}
    if n_pos == 0:
        return None, details
    recall = tp_cum / n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp_cum / (tp_cum + fp_cum)
    details["recall"] = float(recall[-1]) if len(recall) else 0.0
    return average_precision(recall, precision, metric), details


def evaluate(dets, gts, classes, metric="voc07", iou_thresh=0.5):
    """Per-class AP and mAP.

    Returns ``{"metric", "iou_thresh", "mAP", "ap": {class: ap or None},
    "details": {class: {...}}}``; APs are fractions in [0, 1] and the mAP is the
    mean over the classes that have an AP.
    """
    if metric not in METRICS:
        average_precision([], [], metric)  # raises the NSTError
    aps, details = {}, {}
    for cls in classes:
        ap, info = evaluate_class(dets.get(cls) or _finish_dets(_empty_dets()), gts[cls],
                                  iou_thresh, metric)
        aps[cls] = ap
        details[cls] = info
    valid = [v for v in aps.values() if v is not None]
    return {"metric": metric, "iou_thresh": iou_thresh,
            "mAP": float(np.mean(valid)) if valid else None, "ap": aps, "details": details}


def format_results(result, title=None):
    """Human-readable per-class table (AP in %)."""
    name = {"voc07": "VOC2007 11-point AP", "voc10": "VOC2010+ area-under-curve AP"}
    lines = []
    if title:
        lines.append(title)
    lines.append("%s, IoU >= %g" % (name[result["metric"]], result["iou_thresh"]))
    width = max([len(c) for c in result["ap"]] + [5])
    lines.append("%-*s  %6s  %6s  %7s" % (width, "class", "AP %", "#GT", "#det"))
    for cls, ap in result["ap"].items():
        info = result["details"][cls]
        cell = "—" if ap is None else "%.1f" % (100 * ap)
        lines.append("%-*s  %6s  %6d  %7d" % (width, cls, cell, info["n_pos"], info["n_det"]))
    m = result["mAP"]
    lines.append("%-*s  %6s" % (width, "mAP", "—" if m is None else "%.1f" % (100 * m)))
    without = [c for c, ap in result["ap"].items() if ap is None]
    if without:
        lines.append("(— : no non-difficult ground truth in this image set, left out of the "
                     "mAP: %s)" % ", ".join(without))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# nst voc-eval
# ---------------------------------------------------------------------------

def add_arguments(parser):
    parser.description = (
        "Per-class AP and mAP of detections against VOC annotations: the VOC2007 11-point "
        "metric (the paper's) or the VOC2010+ area under the curve, difficult boxes ignored, "
        "IoU >= 0.5 with the devkit's +1 pixel convention.")
    parser.add_argument("--dets", required=True, metavar="DIR_OR_JSON",
                        help="folder of devkit files <prefix><class>.txt (lines 'image_id score "
                             "xmin ymin xmax ymax') or the detections JSON of `nst detect eval`")
    parser.add_argument("--annotations", required=True, metavar="DIR",
                        help="VOC annotation folder, e.g. VOCdevkit/VOC2007/Annotations")
    parser.add_argument("--imageset", required=True, metavar="FILE",
                        help="image-set file, e.g. VOCdevkit/VOC2007/ImageSets/Main/test.txt")
    parser.add_argument("--metric", choices=METRICS, default="voc07",
                        help="voc07: 11-point AP (default, the paper's); voc10: area under "
                             "the curve")
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                        help="classes to evaluate (space- or comma-separated; default: the "
                             "JSON's classes, else the 20 VOC classes)")
    parser.add_argument("--prefix", default=None,
                        help="file-name prefix of the devkit files (default: detected)")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="IoU threshold of a true positive (default 0.5)")
    parser.add_argument("--json", action="store_true",
                        help='print {"mAP": ..., "ap": {class: ...}} (fractions) instead of '
                             'the table')


def _parse_classes(values):
    if not values:
        return None
    classes = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    if len(set(classes)) != len(classes):
        raise NSTError("--classes lists a class twice: %s" % ", ".join(classes))
    return classes


def run(args):
    if not 0 < args.iou <= 1:
        raise NSTError("--iou must be in (0, 1], got %g" % args.iou)
    classes = _parse_classes(args.classes)
    image_ids = read_imageset(args.imageset)
    dets, info = read_detections(args.dets, classes, image_ids, args.prefix)
    classes = classes or info.get("classes") or list(VOC_CLASSES)
    gts = load_ground_truth(args.annotations, image_ids, classes, imageset=args.imageset)
    result = evaluate(dets, gts, classes, metric=args.metric, iou_thresh=args.iou)
    if info["missing_classes"]:
        print("note: no detections for %s (no result file / entry): their AP is 0 if they have "
              "ground truth" % ", ".join(info["missing_classes"]), file=sys.stderr)
    if args.json:
        print(json.dumps({"mAP": result["mAP"], "ap": result["ap"], "metric": args.metric,
                          "iou": args.iou, "images": len(image_ids)}, indent=2))
        return 0
    print(format_results(result, title="%d images of %s; detections %s"
                         % (len(image_ids), args.imageset, args.dets)))
    return 0
