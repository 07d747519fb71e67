#!/usr/bin/env bash
# GMM-HMM recipe on a line dataset: train (tuned on valid), then character-loop CER/WER on test.
#
#   recipes/gmm_hmm.sh DATASET_DIR EXP_DIR [FIRST_STAGE]
#
# DATASET_DIR holds train.tsv, valid.tsv, test.tsv and lines/ (e.g. ../shared/data/iamondb).
# Every stage writes its result into EXP_DIR and is resumable: rerun with the stage number
# to continue. Environment: JOBS (default 2), STATES, MIXTURES, ITERATIONS, PENALTIES (the
# character-insertion penalties tried on valid), VALID_LIMIT (lines of valid used for tuning),
# FRONTEND (front-end options of `hybrid-hwr train`, e.g. "--shift 5"), STATES_FROM (a trained
# model directory: states per character from the mean lengths of its alignments, replacing
# STATES; its front end is used, so FRONTEND is ignored). The usual two passes:
#   recipes/gmm_hmm.sh D exp/gmm7; STATES_FROM=exp/gmm7/model recipes/gmm_hmm.sh D exp/gmm
set -euo pipefail
data=${1:?DATASET_DIR}; exp=${2:?EXP_DIR}; stage=${3:-1}
JOBS=${JOBS:-2}; STATES=${STATES:-7}; MIXTURES=${MIXTURES:-16}; ITERATIONS=${ITERATIONS:-3}
PENALTIES=${PENALTIES:-"0 4 8"}; VALID_LIMIT=${VALID_LIMIT:-400}; FRONTEND=${FRONTEND:-"--shift 5"}
STATES_FROM=${STATES_FROM:-}; HWR=${HWR:-hybrid-hwr}
mkdir -p "$exp"
topology=(--states "$STATES"); [ -z "$STATES_FROM" ] || topology=(--states-from "$STATES_FROM")
if [ -n "$STATES_FROM" ] && [ "$(cd "$STATES_FROM" && pwd)" = "$(cd "$exp/model" 2>/dev/null && pwd)" ]; then
  echo "STATES_FROM is EXP_DIR/model itself: train the second pass into another EXP_DIR" >&2; exit 1
fi

if [ "$stage" -le 1 ]; then   # 1. embedded training, checkpoint after every iteration
  resume=""; [ -f "$exp/model/model.json" ] && resume="--resume"
  start=$(date +%s)
  $HWR train --train "$data/train.tsv" --valid "$data/valid.tsv" --emission gmm \
      "${topology[@]}" --mixtures "$MIXTURES" --iterations "$ITERATIONS" --jobs "$JOBS" \
      $FRONTEND $resume -o "$exp/model" 2>&1 | tee -a "$exp/train.log"
  echo "train wall seconds: $(( $(date +%s) - start )) (jobs $JOBS)" >> "$exp/train.time"
fi

if [ "$stage" -le 2 ]; then   # 2. tune the character-insertion penalty on valid
  : > "$exp/tune.txt"
  for p in $PENALTIES; do
    $HWR decode --model "$exp/model" --char-penalty "$p" --limit "$VALID_LIMIT" --jobs "$JOBS" \
      "$data/valid.tsv" -o "$exp/valid.p$p.tsv"
    cer=$($HWR evaluate <(head -n "$VALID_LIMIT" "$data/valid.tsv") "$exp/valid.p$p.tsv" | awk '/^CER/{print $2}')
    echo "$p $cer" >> "$exp/tune.txt"
  done
  sort -k2,2 -g "$exp/tune.txt" | head -n1 | cut -d' ' -f1 > "$exp/best_penalty"
fi

if [ "$stage" -le 3 ]; then   # 3. test: character loop, no lexicon, no LM
  p=$(cat "$exp/best_penalty")
  start=$(date +%s)
  $HWR decode --model "$exp/model" --char-penalty "$p" --jobs "$JOBS" "$data/test.tsv" -o "$exp/test.hyp.tsv"
  echo "decode seconds: $(( $(date +%s) - start )) (jobs $JOBS)" > "$exp/test.decode_time"
  $HWR evaluate "$data/test.tsv" "$exp/test.hyp.tsv" | tee "$exp/test.results"
fi
