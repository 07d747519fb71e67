#!/usr/bin/env bash
# The neural reference system: a CRNN-CTC network decoded by our own search and LMs.
#
#   recipes/neural_baseline.sh DATASET_DIR EXP_DIR [LANG] [FIRST_STAGE]
#
# LANG is en, fr or generic (default fr), the tokeniser of decoding and scoring. LEXICON, LM
# and CHAR_LM name the lexicon, word LM and character LM; by default the shipped
# lexicons/LANG-50k.txt, lm/LANG-3gram.arpa.gz and lm/LANG-char4gram.arpa.gz (en and fr).
# Needs PyTorch (pip install 'hybrid_hwr[neural]').
# Stages (each writes into EXP_DIR; rerun from a stage number to continue):
#   1. train the CRNN on DATASET_DIR/train.tsv, select on valid.tsv (EXP_DIR/model; an
#      interrupted training resumes from its checkpoint)
#   2. CTC outputs (log-probabilities) of VALID_LIMIT validation lines and of the first
#      TEST_LIMIT test lines (default all), and their greedy (best-path) text
#   3. tune on those validation lines (hybrid-hwr tune --ctc): lexicon + word LM, and the
#      open-vocabulary character LM (no lexicon), each into its own decoder.json
#   4. test: decode with each tuned mode; EXP_DIR/test.results holds the CER/WER of every mode
#   5. with HMM_HYP (an MLP-HMM's test hypotheses): paired bootstrap of the CRNN's best mode
#      against it (EXP_DIR/compare.txt)
# Environment: TRAIN_OPTS (extra options of crnn train, e.g. "--max-minutes 50 --preprocess"),
# VALID_LIMIT (default 100), TEST_LIMIT, TUNE_BEAM (default tune's), BEAM (test, default the decoder's),
# JOBS (test decodes run side by side, default 2), HMM_HYP, HWR (default hybrid-hwr).
set -euo pipefail
data=${1:?DATASET_DIR}; exp=${2:?EXP_DIR}; lang=${3:-fr}; stage=${4:-1}
VALID_LIMIT=${VALID_LIMIT:-100}; TRAIN_OPTS=${TRAIN_OPTS:-}; JOBS=${JOBS:-2}; HWR=${HWR:-hybrid-hwr}
TUNE_BEAM=${TUNE_BEAM:-}; BEAM=${BEAM:-}; HMM_HYP=${HMM_HYP:-}; TEST_LIMIT=${TEST_LIMIT:-}
root=$(cd "$(dirname "$0")/.." && pwd)
lex=${LEXICON:-$root/lexicons/$lang-50k.txt}; lm=${LM:-$root/lm/$lang-3gram.arpa.gz}
clm=${CHAR_LM:-$root/lm/$lang-char4gram.arpa.gz}
for file in "$lex" "$lm" "$clm"; do
  [ -f "$file" ] || { echo "neural_baseline.sh: $file not found (set LEXICON / LM / CHAR_LM)" >&2; exit 1; }
done
model=$exp/model
mkdir -p "$exp"
ref=$exp/test.ref.tsv
score() { $HWR evaluate --lang "$lang" "$ref" "$1" | awk '/^CER/{c=$2} /^WER/{w=$2} END{print c, w}'; }

if [ "$stage" -le 1 ]; then
  resume=(); [ -f "$model/checkpoint.pt" ] && resume=(--resume)
  # shellcheck disable=SC2086
  $HWR crnn train "$data/train.tsv" --valid "$data/valid.tsv" -o "$model" "${resume[@]}" $TRAIN_OPTS \
    2>&1 | tee -a "$exp/train.log"
fi

if [ "$stage" -le 2 ]; then
  head -n "$VALID_LIMIT" "$data/valid.tsv" > "$exp/valid.ref.tsv"
  $HWR crnn logits "$model" "$exp/valid.ref.tsv" --images "$data/lines" -o "$exp/valid.npz"
  if [ -n "$TEST_LIMIT" ]; then head -n "$TEST_LIMIT" "$data/test.tsv"; else cat "$data/test.tsv"; fi > "$ref"
  $HWR crnn logits "$model" "$ref" --images "$data/lines" -o "$exp/test.npz" --greedy "$exp/test.greedy.tsv"
fi

# the options of each tuned mode, and the folder holding its decoder.json
modes=(lexicon_lm charlm)
tune_files() { case $1 in lexicon_lm) echo "--lexicon $lex --lm $lm";; charlm) echo "--char-lm $clm";; esac; }

if [ "$stage" -le 3 ]; then
  for mode in "${modes[@]}"; do
    mkdir -p "$exp/$mode"
    beam=(); [ -n "$TUNE_BEAM" ] && beam=(--beam "$TUNE_BEAM")
    # shellcheck disable=SC2046
    $HWR tune --ctc "$model/alphabet.txt" --emissions "$exp/valid.npz" --valid "$exp/valid.ref.tsv" \
      $(tune_files "$mode") --modes "$mode" --rounds 1 --lang "$lang" --model "$exp/$mode" "${beam[@]}" \
      2>&1 | tee "$exp/$mode/tune.log"
  done
fi

if [ "$stage" -le 4 ]; then
  beam=(); [ -n "$BEAM" ] && beam=(--beam "$BEAM")
  pids=()
  for mode in "${modes[@]}"; do
    $HWR decode --emissions "$exp/test.npz" --ctc "$model/alphabet.txt" --model "$exp/$mode" "${beam[@]}" \
      -o "$exp/test.$mode.tsv" 2> "$exp/test.$mode.log" &
    pids+=($!)
    [ "${#pids[@]}" -lt "$JOBS" ] || { wait "${pids[0]}"; pids=("${pids[@]:1}"); }
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  {
    echo "mode CER WER ($ref, $(wc -l < "$ref") lines)"
    echo "greedy $(score "$exp/test.greedy.tsv")"
    for mode in "${modes[@]}"; do echo "$mode $(score "$exp/test.$mode.tsv")"; done
  } | tee "$exp/test.results"
fi

if [ "$stage" -le 5 ] && [ -n "$HMM_HYP" ]; then
  best=$(awk 'NR > 1 {print $3, $1}' "$exp/test.results" | sort -g | head -1 | cut -d' ' -f2)
  best_file=$exp/test.$best.tsv
  [ "$best" = greedy ] && best_file=$exp/test.greedy.tsv
  $HWR evaluate --lang "$lang" "$ref" "$HMM_HYP" "$best_file" | tee "$exp/compare.txt"
fi
