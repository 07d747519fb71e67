#!/usr/bin/env bash
# Hybrid MLP-HMM experiments on one dataset: GMM-HMM vs MLP-HMM, shallow vs deep MLP at
# about the same number of parameters, 56 features vs raw pixels as MLP input.
#
#   recipes/hybrid_mlp.sh DATASET_DIR GMM_DIR EXP_DIR LANG [FIRST_STAGE]
#
# GMM_DIR is a GMM-HMM (recipes/gmm_hmm.sh): its forced alignments are the MLP targets and it
# is the baseline. Stages:
#   1. train the MLPs named in SYSTEMS, PARALLEL at a time, each on THREADS BLAS threads for at
#      most MAX_MINUTES (plus the alignment) and at most EPOCHS epochs, seed SEED. On the GMM's
#      alignments:
#        shallow  --hidden $SHALLOW  (one hidden layer; 1024 -> 1.08 M weights on IAM-OnDB)
#        deep     --hidden $DEEP     (three hidden layers; 512,512,512 -> 1.07 M weights)
#        pixels   --hidden $SHALLOW --mlp-input pixels (raw pixels of the same windows)
#      then, on the alignments of the deep hybrid (EXP_DIR/deep: one realignment round):
#        realign  --hidden $DEEP     (the deep network again, new targets)
#        deeper   --hidden $DEEPER   (default 512,512,512,512,512: five layers, 1.59 M weights)
#   2. recipes/decode_lm.sh for the GMM and every MLP (tuned on validation, reported on test)
#   3. summary: frame error rates, test CER/WER per mode, and each MLP's WER difference
#      against the GMM with its bootstrap 95% confidence interval, in EXP_DIR/summary.txt;
#      the MLPs' train/valid frame error rate per epoch in EXP_DIR/fer.json
# Environment: SYSTEMS (default "shallow deep pixels"), PARALLEL (2), THREADS (1),
# MAX_MINUTES (70), EPOCHS (30), SEED (0), SHALLOW (1024), DEEP (512,512,512), DEEPER, plus those of
# recipes/decode_lm.sh (JOBS, WEIGHTS, PENALTIES, UNK_PENALTIES, BEAM, VALID_LIMIT, TEST_LIMIT,
# PRIOR_SCALES: the MLPs' kappa values to tune; the GMM ignores it).
set -euo pipefail
data=${1:?DATASET_DIR}; gmm=${2:?GMM_DIR}; exp=${3:?EXP_DIR}; lang=${4:?LANG}; stage=${5:-1}
SYSTEMS=${SYSTEMS:-"shallow deep pixels"}; PARALLEL=${PARALLEL:-2}; THREADS=${THREADS:-1}
MAX_MINUTES=${MAX_MINUTES:-70}; EPOCHS=${EPOCHS:-30}; SEED=${SEED:-0}
SHALLOW=${SHALLOW:-1024}; DEEP=${DEEP:-512,512,512}; DEEPER=${DEEPER:-512,512,512,512,512}
HWR=${HWR:-hybrid-hwr}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$exp"

options() {  # the train options of one system: the model giving its targets, its network
  case $1 in
    shallow) echo "--init-model $(printf %q "$gmm") --hidden $SHALLOW" ;;   # %q: quoted for xargs
    deep) echo "--init-model $(printf %q "$gmm") --hidden $DEEP" ;;
    pixels) echo "--init-model $(printf %q "$gmm") --hidden $SHALLOW --mlp-input pixels" ;;
    realign) echo "--init-model $(printf %q "$exp/deep") --hidden $DEEP" ;;
    deeper) echo "--init-model $(printf %q "$exp/deep") --hidden $DEEPER" ;;
    *) echo "unknown system $1" >&2; return 1 ;;
  esac
}

if [ "$stage" -le 1 ]; then
  for wave in gmm hybrid; do   # systems realigned by the deep hybrid wait for it
    if [ $wave = hybrid ] && [[ " $SYSTEMS " =~ \ (realign|deeper)\  ]] && [ ! -f "$exp/deep/model.json" ]; then
      echo "realign and deeper train on the alignments of $exp/deep: add deep to SYSTEMS" >&2; exit 1
    fi
    for system in $SYSTEMS; do
      case $system in realign|deeper) needs=hybrid ;; *) needs=gmm ;; esac
      if [ "$needs" = "$wave" ]; then echo "$system $(options "$system")"; fi
    done | OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
      xargs -r -P "$PARALLEL" -L 1 bash -c '
        system=$1; shift
        /usr/bin/env time -f "%e s wall, %M KB peak" -o "'"$exp"'/$system.time" \
          '"$HWR"' train --emission mlp --train "'"$data"'/train.tsv" --valid "'"$data"'/valid.tsv" "$@" \
          --context 4 --epochs '"$EPOCHS"' --max-minutes '"$MAX_MINUTES"' --seed '"$SEED"' --threads '"$THREADS"' --jobs 1 \
          -o "'"$exp"'/$system" > "'"$exp"'/$system.log" 2>&1' _
  done
fi

if [ "$stage" -le 2 ]; then
  for system in gmm $SYSTEMS; do
    model="$exp/$system"; scales=${PRIOR_SCALES:-}
    [ "$system" = gmm ] && { model=$gmm; scales=; }   # a GMM has no state priors to scale
    HWR=$HWR PRIOR_SCALES=$scales bash "$here/decode_lm.sh" "$data" "$model" "$exp/decode_$system" "$lang"
  done
fi

if [ "$stage" -le 3 ]; then
  {
    echo "system     valid_FER  kappa  test CER/WER: charloop  lexicon  lexicon_3gram  open_vocab"
    for system in gmm $SYSTEMS; do
      fer=$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1] + "/model.json"))
rounds = m.get("history", {}).get("rounds", [])
print("%.2f" % (100 * rounds[-1]["best_valid_fer"]) if rounds else "-")' "${exp}/$system" 2>/dev/null || echo "-")
      kappa=$(awk '{print $5}' "$exp/decode_$system/best")   # tuned prior scale ("model": not tuned)
      printf "%-10s %-10s %-6s" "$system" "$fer" "${kappa:--}"
      awk '{printf " %s/%s", $2, $3}' "$exp/decode_$system/test.results"; echo
    done
    echo
    for system in $SYSTEMS; do
      for mode in charloop lexicon_3gram; do
        echo "$system vs gmm, $mode:"
        $HWR evaluate --lang "$lang" "$exp/decode_gmm/test.ref.tsv" "$exp/decode_gmm/test.$mode.tsv" \
          "$exp/decode_$system/test.$mode.tsv" | awk '/^B - A/{f=1} f && /^(CER|WER)/{print "  " $0}'
      done
    done
  } | tee "$exp/summary.txt"
  python3 - "$exp" $SYSTEMS > "$exp/fer.json" <<'PY'
import json, sys
exp, systems = sys.argv[1], sys.argv[2:]
curves = {}
for system in systems:
    model = json.load(open(f"{exp}/{system}/model.json"))
    meta = model["emission_meta"]
    meta = meta if isinstance(meta, dict) else json.loads(meta)
    layers = meta["layer_sizes"]
    curves[system] = {"layers": layers, "weights": sum(a * b + b for a, b in zip(layers, layers[1:])),
                      "input": model["history"].get("input_kind"),
                      "targets": f"alignment of {model['history'].get('init_model')}",
                      "epochs": [{"epoch": r["epoch"], "train_fer": round(r["train_fer"], 5),
                                  "valid_fer": round(r["valid_fer"], 5), "seconds": r.get("seconds")}
                                 for r in meta["history"]]}
json.dump(curves, sys.stdout, indent=1)
PY
fi
