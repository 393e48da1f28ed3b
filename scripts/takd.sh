#!/usr/bin/env bash
# Teacher-assistant knowledge distillation (TAKD; Mirzadeh et al., AAAI 2020):
# teacher -> assistant -> student, KD at every step, against the student
# distilled from the teacher directly.  Each step is `nst train`; a step's
# teacher.checkpoint is the previous step's <out>/student.params.
#
#   scripts/takd.sh [--quick] [--dataset cifar10|cifar100] [--root DIR]
#                   [--out-root DIR] [--teacher FILE] [--nst] [nst train options...]
#
# Steps (configs/takd/; the teacher and the direct baseline are Table 1's):
#   1. teacher    ResNet-1001          configs/<ds>/teacher.yaml (kept if trained)
#   2. assistant  ResNet-164, KD       configs/takd/<ds>_assistant.yaml
#   3. student    Inception-BN, KD from the assistant  configs/takd/<ds>_student.yaml
#   4. baseline   Inception-BN, KD from the teacher    configs/<ds>/kd.yaml
#   --nst adds KD+NST (poly) students both ways (<ds>_student_nst.yaml, kd_nst.yaml).
# It ends by printing the students' test errors with and without the assistant.
#
# Full scale (a GPU machine): scripts/takd.sh --root data --gpus 0
#   (the teacher is runs/<ds>/teacher, Table 1's, trained first if missing;
#   the other runs go to runs/takd/<ds>/)
# --quick (a 2-core CPU, the genuine CIFAR-10 subset in ../shared/data):
#   ResNet-20 teacher (8 epochs, all 5,170 images), ResNet-11 assistant (same
#   recipe, KD), quarter-width Inception-BN-small students (3 epochs, batch 64,
#   lr 0.02, 2,560 images), as `nst table methods --quick`; runs in
#   runs/quick/takd/<ds>/.
# --teacher FILE uses an already trained teacher (.params of the teacher
# network) instead of step 1.  Finished steps are kept, interrupted ones
# resumed, when the script runs again.
set -euo pipefail
cd "$(dirname "$0")/.."
NST=".venv/bin/nst"; [ -x "$NST" ] || NST="nst"
PY=".venv/bin/python"; [ -x "$PY" ] || PY="python"

quick=0; dataset=cifar10; root=""; out_root=""; teacher=""; with_nst=0; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --dataset) dataset="$2"; shift ;;
    --root) root="$2"; shift ;;
    --out-root) out_root="$2"; shift ;;
    --teacher) teacher="$2"; shift ;;
    --nst) with_nst=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
case "$dataset" in cifar10|cifar100) ;; *)
  echo "takd.sh: --dataset must be cifar10 or cifar100, not $dataset" >&2; exit 2 ;; esac

common=()
if [ $quick = 1 ]; then
  if [ -z "$root" ]; then
    root="data"; [ -d ../shared/data/cifar-10-batches-py ] && root="../shared/data"
  fi
  out_root="${out_root:-runs/quick/takd}"
else
  out_root="${out_root:-runs/takd}"
fi
[ -n "$root" ] && common+=(--set "data.root=$root")
out="$out_root/$dataset"

# --quick overrides: the teacher-like recipe (teacher, assistant) and the student one
big=(--set epochs=8 --set "optimizer.lr_steps=[6]" --set optimizer.lr=0.1
     --set data.batch_size=64)
small=(--set epochs=3 --set "optimizer.lr_steps=[2]" --set optimizer.lr=0.02
       --set data.batch_size=64 --set data.train_limit=2560
       --set "student.params={width: 0.25}")
Q_TEACHER=(); Q_ASSISTANT=(); Q_STUDENT=(); Q_DIRECT=()
if [ $quick = 1 ]; then
  Q_TEACHER=("${big[@]}" --set student.network=preact_resnet20_cifar
             --set "student.params={width: 1.0}")
  Q_ASSISTANT=("${big[@]}" --set student.network=preact_resnet11_cifar
               --set "student.params={width: 1.0}" --set teacher.network=preact_resnet20_cifar
               --set "teacher.params={width: 1.0}")
  Q_STUDENT=("${small[@]}" --set teacher.network=preact_resnet11_cifar
             --set "teacher.params={width: 1.0}")
  Q_DIRECT=("${small[@]}" --set teacher.network=preact_resnet20_cifar
            --set "teacher.params={width: 1.0}")
fi

step() {  # step LABEL CONFIG OUT [nst train options...]
  local label="$1" config="$2" dir="$3"; shift 3
  if [ -f "$dir/results.json" ]; then
    echo "== $label: already finished ($dir)"
    return
  fi
  echo "== $label: $config -> $dir"
  "$NST" train "$config" --out "$dir" --resume "${common[@]}" "$@" ${extra[@]+"${extra[@]}"}
}

# 1. teacher
if [ -n "$teacher" ]; then
  [ -f "$teacher" ] || { echo "takd.sh: teacher checkpoint $teacher does not exist" >&2; exit 2; }
  teacher_dir=""
else
  teacher_dir=$([ $quick = 1 ] && echo "$out/teacher" || echo "runs/$dataset/teacher")
  step "teacher" "configs/$dataset/teacher.yaml" "$teacher_dir" ${Q_TEACHER[@]+"${Q_TEACHER[@]}"}
  teacher="$teacher_dir/student.params"
fi
# 2. assistant (KD from the teacher)
step "assistant" "configs/takd/${dataset}_assistant.yaml" "$out/assistant" \
  --set "teacher.checkpoint=$teacher" ${Q_ASSISTANT[@]+"${Q_ASSISTANT[@]}"}
assistant="$out/assistant/student.params"
# 3. student via the assistant, 4. student from the teacher directly
step "student via the assistant (KD)" "configs/takd/${dataset}_student.yaml" "$out/student_takd" \
  --set "teacher.checkpoint=$assistant" ${Q_STUDENT[@]+"${Q_STUDENT[@]}"}
step "student from the teacher (KD)" "configs/$dataset/kd.yaml" "$out/student_kd" \
  --set "teacher.checkpoint=$teacher" ${Q_DIRECT[@]+"${Q_DIRECT[@]}"}
if [ $with_nst = 1 ]; then
  step "student via the assistant (KD+NST)" "configs/takd/${dataset}_student_nst.yaml" \
    "$out/student_takd_nst" --set "teacher.checkpoint=$assistant" ${Q_STUDENT[@]+"${Q_STUDENT[@]}"}
  step "student from the teacher (KD+NST)" "configs/$dataset/kd_nst.yaml" "$out/student_kd_nst" \
    --set "teacher.checkpoint=$teacher" ${Q_DIRECT[@]+"${Q_DIRECT[@]}"}
fi

"$PY" - "$out" "$teacher_dir" "$with_nst" "$dataset" <<'EOF'
import json, os, sys

out, teacher_dir, with_nst, dataset = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]


def result(folder):
    path = os.path.join(folder, "results.json")
    if not folder or not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def err(res):
    return "—" if res is None or res.get("test_top1_err") is None else \
        "%.2f" % res["test_top1_err"]


rows = [("Teacher", result(teacher_dir)), ("Assistant (KD from the teacher)",
                                            result(os.path.join(out, "assistant")))]
pairs = [("KD", "student_kd", "student_takd")]
if with_nst:
    pairs.append(("KD+NST (poly)", "student_kd_nst", "student_takd_nst"))
print()
print("**TAKD on %s: test error %% (teacher -> assistant -> student)**" % dataset)
print()
print("| Network | Model | Test error |")
print("|---|---|---|")
for label, res in rows:
    print("| %s | %s | %s |" % (label, res.get("student", "?") if res else "(given)", err(res)))
print()
print("| Student method | without assistant | with assistant | Δ |")
print("|---|---|---|---|")
for label, direct, via in pairs:
    a, b = result(os.path.join(out, direct)), result(os.path.join(out, via))
    diff = "—" if a is None or b is None else "%+.2f" % (b["test_top1_err"] - a["test_top1_err"])
    print("| %s | %s | %s | %s |" % (label, err(a), err(b), diff))
print()
print("runs in %s/ (results.json, log.json, curves.png per step)" % out)
EOF
