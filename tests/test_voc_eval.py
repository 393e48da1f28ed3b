"""``tools/voc_eval.py`` (``nst voc-eval``): hand-computed cases, GluonCV equality, the CLI."""

import json
import math
import os

import numpy as np
import pytest

from nst.cli import main as nst_main
from nst.errors import NSTError
from tools import voc_eval
from tools.voc_eval import VOC_CLASSES


# --------------------------------------------------------------------- helpers
def write_xml(folder, image_id, objects, size=(500, 375)):
    """``objects``: [(name, (xmin, ymin, xmax, ymax), difficult), ...] in VOC 1-based pixels."""
    os.makedirs(folder, exist_ok=True)
    parts = ["<annotation>", "  <filename>%s.jpg</filename>" % image_id,
             "  <size><width>%d</width><height>%d</height><depth>3</depth></size>" % size]
    for name, box, difficult in objects:
        parts += ["  <object>", "    <name>%s</name>" % name,
                  "    <difficult>%d</difficult>" % int(difficult),
                  "    <bndbox><xmin>%s</xmin><ymin>%s</ymin><xmax>%s</xmax><ymax>%s</ymax>"
                  "</bndbox>" % tuple(box), "  </object>"]
    parts.append("</annotation>")
    path = os.path.join(folder, image_id + ".xml")
    with open(path, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    return path


def write_case(tmp_path, gts, dets, classes=("dog",)):
    """A VOC folder + devkit files.  ``gts``: {image: objects}; ``dets``: {class: [(image,
    score, box)]}.  Returns (dets_dir, annotations_dir, imageset_path)."""
    ann = tmp_path / "Annotations"
    for image_id, objects in gts.items():
        write_xml(str(ann), image_id, objects)
    imageset = tmp_path / "test.txt"
    imageset.write_text("".join(i + "\n" for i in gts))
    det_dir = tmp_path / "dets"
    det_dir.mkdir()
    for cls in classes:
        lines = ["%s %.6f %s %s %s %s" % ((i, s) + tuple(b)) for i, s, b in dets.get(cls, [])]
        (det_dir / ("comp4_det_test_%s.txt" % cls)).write_text("\n".join(lines) + "\n")
    return str(det_dir), str(ann), str(imageset)


def score(tmp_path, gts, dets, metric="voc07", classes=("dog",)):
    det_dir, ann, imageset = write_case(tmp_path, gts, dets, classes)
    ids = voc_eval.read_imageset(imageset)
    d, _ = voc_eval.read_detections(det_dir, list(classes), ids)
    g = voc_eval.load_ground_truth(ann, ids, list(classes))
    return voc_eval.evaluate(d, g, list(classes), metric=metric)


BOX = (11, 21, 110, 120)          # a 100 x 100 box under the +1 convention
FAR = (300, 200, 400, 300)


# --------------------------------------------------------------- hand-computed
@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_one_true_positive(tmp_path, metric):
    r = score(tmp_path, {"a": [("dog", BOX, 0)]}, {"dog": [("a", 0.9, BOX)]}, metric)
    assert r["ap"]["dog"] == pytest.approx(1.0)
    assert r["mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_false_positive_before_true_positive(tmp_path, metric):
    # ranks: FP (recall 0, precision 0), TP (recall 1, precision 1/2) -> AP 0.5 both ways
    r = score(tmp_path, {"a": [("dog", BOX, 0)]},
              {"dog": [("a", 0.9, FAR), ("a", 0.8, BOX)]}, metric)
    assert r["ap"]["dog"] == pytest.approx(0.5)


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_detection_of_a_difficult_box_is_ignored(tmp_path, metric):
    # the top detection hits a difficult box: neither TP nor FP; then a FP, then the TP.
    # With the flag: recall (0, 0, 1), precision (-, 0, 1/2) -> AP 0.5.
    gts = {"a": [("dog", BOX, 0)], "b": [("dog", BOX, 1)]}
    dets = {"dog": [("b", 0.9, BOX), ("a", 0.8, FAR), ("a", 0.7, BOX)]}
    assert score(tmp_path, gts, dets, metric)["ap"]["dog"] == pytest.approx(0.5)


def test_difficult_flag_changes_the_answer(tmp_path):
    # the same detections with box b not difficult: 2 positives, recall (.5, .5, 1),
    # precision (1, .5, 2/3) -> 11-point AP (6 * 1 + 5 * 2/3) / 11
    gts = {"a": [("dog", BOX, 0)], "b": [("dog", BOX, 0)]}
    dets = {"dog": [("b", 0.9, BOX), ("a", 0.8, FAR), ("a", 0.7, BOX)]}
    assert score(tmp_path, gts, dets)["ap"]["dog"] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_missed_difficult_box_does_not_lower_recall(tmp_path):
    gts = {"a": [("dog", BOX, 0), ("dog", FAR, 1)]}
    r = score(tmp_path, gts, {"dog": [("a", 0.9, BOX)]})
    assert r["ap"]["dog"] == pytest.approx(1.0)
    assert r["details"]["dog"]["n_pos"] == 1


def test_missed_ground_truth_11_point_vs_area(tmp_path):
    # one of two boxes found: recall 0.5 at precision 1.
    gts = {"a": [("dog", BOX, 0)], "b": [("dog", BOX, 0)]}
    dets = {"dog": [("a", 0.9, BOX)]}
    # 11-point: thresholds 0, 0.1, ..., 0.5 reach precision 1 -> 6/11; area: 0.5
    assert score(tmp_path / "07", gts, dets, "voc07")["ap"]["dog"] == pytest.approx(6 / 11)
    assert score(tmp_path / "10", gts, dets, "voc10")["ap"]["dog"] == pytest.approx(0.5)


def test_duplicate_detections_are_false_positives(tmp_path):
    # TP on a, duplicate on a (FP), TP on b: recall (.5, .5, 1), precision (1, .5, 2/3)
    gts = {"a": [("dog", BOX, 0)], "b": [("dog", BOX, 0)]}
    dup = (12, 22, 111, 121)
    dets = {"dog": [("a", 0.9, BOX), ("a", 0.8, dup), ("b", 0.7, BOX)]}
    r07 = score(tmp_path / "07", gts, dets, "voc07")
    r10 = score(tmp_path / "10", gts, dets, "voc10")
    assert r07["ap"]["dog"] == pytest.approx((6 + 5 * 2 / 3) / 11)   # 0.8485
    assert r10["ap"]["dog"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # 0.8333
    assert r07["details"]["dog"]["fp"] == 1


def test_iou_uses_the_plus_one_pixel_convention(tmp_path):
    gt = (1, 1, 10, 10)              # 10 x 10 pixels
    half = (1, 1, 10, 5)             # 10 x 5: IoU exactly 0.5 with +1 (0.44 without)
    less = (1, 1, 10, 4)             # 10 x 4: IoU 0.4
    assert score(tmp_path / "a", {"a": [("dog", gt, 0)]},
                 {"dog": [("a", 0.9, half)]})["ap"]["dog"] == pytest.approx(1.0)
    assert score(tmp_path / "b", {"a": [("dog", gt, 0)]},
                 {"dog": [("a", 0.9, less)]})["ap"]["dog"] == pytest.approx(0.0)


def test_class_without_ground_truth_is_left_out_of_the_map(tmp_path):
    gts = {"a": [("dog", BOX, 0)], "b": [("cat", BOX, 1)]}
    dets = {"dog": [("a", 0.9, BOX)], "cat": [("b", 0.5, BOX)], "bird": [("a", 0.4, FAR)]}
    r = score(tmp_path, gts, dets, classes=("bird", "cat", "dog"))
    assert r["ap"] == {"bird": None, "cat": None, "dog": pytest.approx(1.0)}
    assert r["mAP"] == pytest.approx(1.0)


def test_map_is_the_mean_of_class_aps(tmp_path):
    gts = {"a": [("dog", BOX, 0), ("cat", FAR, 0)], "b": [("dog", BOX, 0)]}
    dets = {"dog": [("a", 0.9, BOX)], "cat": [("a", 0.8, FAR)]}
    r = score(tmp_path, gts, dets, classes=("cat", "dog"))
    assert r["ap"]["cat"] == pytest.approx(1.0)
    assert r["ap"]["dog"] == pytest.approx(6 / 11)
    assert r["mAP"] == pytest.approx((1 + 6 / 11) / 2)


def test_no_detections_gives_zero(tmp_path):
    r = score(tmp_path, {"a": [("dog", BOX, 0)]}, {"dog": []})
    assert r["ap"]["dog"] == 0.0


def test_average_precision_rejects_unknown_metric():
    with pytest.raises(NSTError, match="voc07"):
        voc_eval.average_precision([1.0], [1.0], "coco")


# ------------------------------------------------------- equality with GluonCV
def _random_case(rng, n_images, classes):
    gts, dets = {}, {c: [] for c in classes}
    scores = iter(rng.permutation(100000)[:5000] / 100000.0 + 1e-6)
    for k in range(n_images):
        image_id = "%06d" % (k + 1)
        objects = []
        for _ in range(rng.integers(0, 5)):
            x0, y0 = rng.integers(1, 300, size=2)
            w, h = rng.integers(8, 180, size=2)
            objects.append((str(rng.choice(classes)), (int(x0), int(y0), int(x0 + w), int(y0 + h)),
                            int(rng.random() < 0.2)))
        gts[image_id] = objects
        for name, box, _ in objects:   # jittered hits, sometimes twice, sometimes mislabelled
            for _ in range(rng.integers(0, 3)):
                jitter = rng.normal(0, 0.15 * (box[2] - box[0]), size=4)
                b = np.round(np.array(box, float) + jitter, 1)
                b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
                cls = name if rng.random() < 0.85 else str(rng.choice(classes))
                dets[cls].append((image_id, float(next(scores)), tuple(b)))
        for _ in range(rng.integers(0, 4)):  # background false positives
            x0, y0 = rng.integers(1, 400, size=2)
            b = (float(x0), float(y0), float(x0 + rng.integers(5, 100)),
                 float(y0 + rng.integers(5, 100)))
            dets[str(rng.choice(classes))].append((image_id, float(next(scores)), b))
    return gts, dets


def _gluoncv_map(gts, dets, classes, metric):
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

    m = (VOC07MApMetric if metric == "voc07" else VOCMApMetric)(iou_thresh=0.5,
                                                                class_names=list(classes))
    index = {c: i for i, c in enumerate(classes)}
    for image_id, objects in gts.items():
        rows = [(index[c], s, b) for c in classes for i, s, b in dets[c] if i == image_id]
        pb = np.array([r[2] for r in rows], float).reshape(1, -1, 4) - 1   # 0-based, as GluonCV
        pl = np.array([r[0] for r in rows], float).reshape(1, -1)
        ps = np.array([r[1] for r in rows], float).reshape(1, -1)
        gb = np.array([o[1] for o in objects], float).reshape(1, -1, 4) - 1
        gl = np.array([index[o[0]] for o in objects], float).reshape(1, -1)
        gd = np.array([o[2] for o in objects], float).reshape(1, -1)
        m.update(pb, pl, ps, gb, gl, gd)
    names, values = m.get()
    return dict(zip(names, values))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_equals_gluoncv_metric_on_random_detections(tmp_path, seed, metric):
    classes = ("bird", "cat", "dog", "horse", "sheep")
    rng = np.random.default_rng(seed)
    gts, dets = _random_case(rng, 25, classes)
    det_dir, ann, imageset = write_case(tmp_path, gts, dets, classes)
    ids = voc_eval.read_imageset(imageset)
    g = voc_eval.load_ground_truth(ann, ids, list(classes))
    ours_files, _ = voc_eval.read_detections(det_dir, list(classes), ids)
    json_path = str(tmp_path / "dets.json")
    voc_eval.write_detections_json(json_path, ours_files, list(classes))
    ours_json, _ = voc_eval.read_detections(json_path, None, ids)
    expected = _gluoncv_map(gts, dets, classes, metric)
    for source in (ours_files, ours_json):
        r = voc_eval.evaluate(source, g, list(classes), metric=metric)
        for cls in classes:
            if math.isnan(expected[cls]):
                assert r["ap"][cls] is None
            else:
                assert r["ap"][cls] == pytest.approx(expected[cls], abs=1e-12)
        assert r["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_cross_image_score_ties_keep_file_order_as_the_devkit_gluoncv_reverses_them(tmp_path,
                                                                                      metric):
    """Two detections of one class with the same score in different images: a false
    positive on image a listed before a true positive on image b.  The devkit
    (VOCevaldet.m: MATLAB's stable ``sort(-confidence)``) and this tool visit them in file
    order, FP then TP: recall (0, 1), precision (0, 1/2) -> AP 0.5 (11-point and area).
    GluonCV's VOC07MApMetric/VOCMApMetric sort with ``argsort()[::-1]``, which reverses
    the tie, TP then FP: recall (1, 1), precision (1, 1/2) -> AP 1.  Listed the other way
    round, this tool gives 1 as well: the equality with GluonCV holds only without such
    ties."""
    gts = {"a": [], "b": [("dog", BOX, 0)]}
    file_order = [("a", 0.5, BOX), ("b", 0.5, BOX)]
    r = score(tmp_path / "ab", gts, {"dog": file_order}, metric)
    assert r["ap"]["dog"] == pytest.approx(0.5)                      # devkit order
    assert _gluoncv_map(gts, {"dog": file_order}, ("dog",), metric)["dog"] == pytest.approx(1.0)
    swapped = score(tmp_path / "ba", gts, {"dog": file_order[::-1]}, metric)
    assert swapped["ap"]["dog"] == pytest.approx(1.0)
    # the same through the detector's JSON, whose rows keep the order of the input
    ids = ["a", "b"]
    dets, _ = voc_eval.read_detections(str(tmp_path / "ab" / "dets"), ["dog"], ids)
    path = str(tmp_path / "dets.json")
    voc_eval.write_detections_json(path, dets, ["dog"])
    again, _ = voc_eval.read_detections(path, None, ids)
    assert [row for row in again["dog"]["image_ids"]] == ["a", "b"]
    g = voc_eval.load_ground_truth(str(tmp_path / "ab" / "Annotations"), ids, ["dog"])
    assert voc_eval.evaluate(again, g, ["dog"], metric)["ap"]["dog"] == pytest.approx(0.5)
    # without the tie all three agree
    untied = [("a", 0.5, BOX), ("b", 0.5 + 1e-3, BOX)]
    assert score(tmp_path / "untied", gts, {"dog": untied}, metric)["ap"]["dog"] == \
        pytest.approx(_gluoncv_map(gts, {"dog": untied}, ("dog",), metric)["dog"]) == 1.0


def test_voc07_and_voc10_differ_on_random_detections(tmp_path):
    classes = ("bird", "cat", "dog")
    gts, dets = _random_case(np.random.default_rng(7), 20, classes)
    r07 = score(tmp_path / "a", gts, dets, "voc07", classes)
    r10 = score(tmp_path / "b", gts, dets, "voc10", classes)
    assert r07["mAP"] != pytest.approx(r10["mAP"], abs=1e-6)


# ------------------------------------------------------------------------ CLI
@pytest.fixture
def small_case(tmp_path):
    gts = {"a": [("dog", BOX, 0)], "b": [("dog", BOX, 0), ("cat", FAR, 0)]}
    dets = {"dog": [("a", 0.9, BOX)], "cat": [("b", 0.8, FAR)]}
    return write_case(tmp_path, gts, dets, ("cat", "dog"))


def test_cli_prints_table(small_case, capsys):
    det_dir, ann, imageset = small_case
    code = nst_main(["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset",
                     imageset, "--classes", "cat,dog"])
    out = capsys.readouterr().out
    assert code == 0
    assert "VOC2007 11-point" in out
    assert "mAP" in out and "77.3" in out   # (1 + 6/11) / 2 = 0.7727


def test_cli_json_and_default_classes(small_case, capsys):
    det_dir, ann, imageset = small_case
    assert nst_main(["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset",
                     imageset, "--json", "--metric", "voc10"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert set(data["ap"]) == set(VOC_CLASSES)    # all 20 classes by default
    assert data["ap"]["dog"] == pytest.approx(0.5)
    assert data["ap"]["cat"] == pytest.approx(1.0)
    assert data["ap"]["person"] is None
    assert data["mAP"] == pytest.approx(0.75)
    assert "no detections for" in captured.err   # 18 classes have no file


def test_cli_reads_the_detector_json(tmp_path, small_case, capsys):
    det_dir, ann, imageset = small_case
    ids = voc_eval.read_imageset(imageset)
    dets, _ = voc_eval.read_detections(det_dir, ["cat", "dog"], ids)
    path = str(tmp_path / "detections.json")
    voc_eval.write_detections_json(path, dets, ["cat", "dog"])
    assert nst_main(["voc-eval", "--dets", path, "--annotations", ann, "--imageset", imageset,
                     "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["ap"]) == {"cat", "dog"}
    assert data["mAP"] == pytest.approx((1 + 6 / 11) / 2)


def _error(capsys, argv, *fragments):
    assert nst_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("nst voc-eval: error: ")
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_cli_malformed_xml(small_case, capsys):
    det_dir, ann, imageset = small_case
    path = os.path.join(ann, "b.xml")
    with open(path, "w") as handle:
        handle.write("<annotation>\n  <object><name>dog</name>\n</annotation>\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "not well-formed", "line 3")


def test_cli_refuses_doctype_and_entities(small_case, capsys):
    det_dir, ann, imageset = small_case
    path = os.path.join(ann, "a.xml")
    with open(path, "w") as handle:
        handle.write('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "xxxxxxxx">]>\n'
                     "<annotation><object><name>&x;</name></object></annotation>\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "refusing", "DOCTYPE", "line 2")


def test_cli_missing_annotation(small_case, capsys):
    det_dir, ann, imageset = small_case
    os.remove(os.path.join(ann, "b.xml"))
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           os.path.join(ann, "b.xml"), "does not exist", imageset)


def test_cli_detection_of_an_image_not_in_the_set(small_case, capsys):
    det_dir, ann, imageset = small_case
    path = os.path.join(det_dir, "comp4_det_test_dog.txt")
    with open(path, "a") as handle:
        handle.write("zzz 0.5 1 1 10 10\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "line 2", "'zzz'", "not in the image set")


def test_cli_bad_line(small_case, capsys):
    det_dir, ann, imageset = small_case
    path = os.path.join(det_dir, "comp4_det_test_cat.txt")
    with open(path, "a") as handle:
        handle.write("b 0.5 1 1 10\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "line 2", "6 fields")
    with open(path, "w") as handle:
        handle.write("b 0.5 1 1 10 ten\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "line 1", "numbers")


def test_cli_empty_detections_folder(tmp_path, small_case, capsys):
    _, ann, imageset = small_case
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(capsys, ["voc-eval", "--dets", str(empty), "--annotations", ann, "--imageset",
                    imageset], str(empty), "no result file")


def test_cli_bad_json_and_missing_imageset(tmp_path, small_case, capsys):
    _, ann, imageset = small_case
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _error(capsys, ["voc-eval", "--dets", str(bad), "--annotations", ann, "--imageset", imageset],
           str(bad), "not valid JSON")
    bad.write_text(json.dumps({"format": voc_eval.JSON_FORMAT, "classes": ["dog"],
                               "detections": {"dog": [["a", 0.5, 1, 2, 3]]}}))
    _error(capsys, ["voc-eval", "--dets", str(bad), "--annotations", ann, "--imageset", imageset],
           str(bad), "detections['dog'][0]")
    _error(capsys, ["voc-eval", "--dets", str(bad), "--annotations", ann, "--imageset",
                    str(tmp_path / "nope.txt")], "nope.txt", "does not exist")


def test_cli_missing_bndbox_coordinate_names_line(small_case, capsys):
    det_dir, ann, imageset = small_case
    path = os.path.join(ann, "a.xml")
    with open(path, "w") as handle:
        handle.write("<annotation>\n<object>\n<name>dog</name>\n<bndbox><xmin>1</xmin>"
                     "<ymin>1</ymin><xmax>5</xmax></bndbox>\n</object>\n</annotation>\n")
    _error(capsys, ["voc-eval", "--dets", det_dir, "--annotations", ann, "--imageset", imageset],
           path, "line 4", "<ymax>")
