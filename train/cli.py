"""``nst train CONFIG``: train a teacher, a student or a distilled student.

Examples::

    nst train configs/cifar10/teacher.yaml --gpus 0            # the teacher
    nst train configs/cifar10/kd_nst.yaml --gpus 0             # KD + NST student
    nst train configs/cifar10/kd_nst.yaml --resume             # continue after a stop
    nst train configs/cifar10/nst_poly.yaml --cpus 2 --set epochs=2 --set data.train_limit=512
"""

import json

from train.config import load_config
from train.devices import parse_contexts


def add_arguments(parser):
    parser.add_argument("config", help="YAML experiment config (see configs/)")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids, e.g. 0,1,2,3 (needs mxnet-cu112)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="number of CPU contexts to split each batch over (default 1)")
    parser.add_argument("--kvstore", default=None,
                        help="device (default), nccl, local or dist_sync; overrides train.kvstore")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs=2 "
                             "--set data.batch_size=64 (repeatable)")
    parser.add_argument("--out", default=None, help="run folder (default runs/<name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--skip-teacher-eval", action="store_true",
                        help="do not evaluate the teacher on the test split before "
                             "distilling (same as --set teacher.evaluate=false)")


def run(args):
    from train.trainer import Distiller

    overrides = list(args.overrides)
    if args.out:
        overrides.append("out=%s" % json.dumps(args.out))

    cfg = load_config(args.config, overrides)
    contexts = parse_contexts(args.gpus, args.cpus)
    if args.skip_teacher_eval and cfg["teacher"] is not None:
        cfg["teacher"]["evaluate"] = False
    distiller = Distiller(cfg, contexts, kvstore=args.kvstore, progress=not args.no_progress)
    results = distiller.fit(resume=args.resume)
    if results is None:
        return 130
    print("finished %s: test top-1 error %.2f%%; student parameters in %s, log in %s"
          % (results["name"], results["test_top1_err"], results["student_params"],
             results["log"]))
    return 0
