"""``nst demo``: the whole method on real data that ships with scikit-learn.

Trains a small pre-activation ResNet teacher on the handwritten digits
(1,797 8x8 images resized to 32x32, fixed stratified split), then the
Inception-BN-small student alone, with KD, with NST (polynomial kernel) and
with KD+NST, prints a Table-1-style table of their test errors and draws the
t-SNE of the teacher's and the students' neuron selectivity patterns before
and after NST (the paper's Fig. 5).  Every number comes from this run.
Outputs go to ``runs/demo/`` (one folder per row, ``demo.md``/``demo.json``
with the table, ``demo_digits_curves.png``, ``demo_tsne.png``/``.json``).
The rows are the configs in ``configs/demo/`` and the ``demo`` table of
``configs/tables.yaml``.
"""

import os
import time

from tools.tsne import make_tsne_figure
from train.experiments import run_table, write_table_outputs


def add_arguments(parser):
    parser.add_argument("--out-root", default=os.path.join("runs", "demo"),
                        help="output folder (default runs/demo); its previous demo runs are "
                             "replaced")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: the configs', 12)")
    parser.add_argument("--cpus", type=int, default=None, help="number of CPU contexts")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from train.devices import parse_contexts

    tic = time.time()
    overrides = {} if args.epochs is None else {"epochs": args.epochs,
                                                "optimizer.lr_steps": []}
    print("nst demo: teacher, then four students on scikit-learn's digits; outputs in %s"
          % args.out_root)
    results = run_table("demo", "digits", out_root=args.out_root,
                        contexts=parse_contexts(None, args.cpus),
                        progress=not args.no_progress, fresh=True, overrides=overrides)
    measured = {"digits": results}
    print()
    print(write_table_outputs("demo", measured, args.out_root))
    tsne_png = os.path.join(args.out_root, "demo_tsne.png")
    figure = make_tsne_figure(os.path.join(args.out_root, "teacher"),
                              [os.path.join(args.out_root, "student"),
                               os.path.join(args.out_root, "nst_poly")],
                              tsne_png, labels=["Student (no transfer)", "NST (poly)"],
                              log=lambda *_: None)
    print("\nMMD^2 (poly) between teacher and student selectivity patterns (Fig. 5): "
          + ", ".join("%s %.4f" % (p["label"], p["mmd2"]) for p in figure["panels"]))
    print("\ndone in %.0f s. Outputs in %s/: demo.md (table), demo.json (results), "
          "demo_digits_curves.png (error curves), demo_tsne.png (t-SNE, Fig. 5), one run "
          "folder per row." % (time.time() - tic, args.out_root))
    return 0
