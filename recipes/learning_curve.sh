#!/usr/bin/env bash
# Learning curve: GMM-HMM, MLP-HMM and CRNN-CTC trained on the first N training lines,
# each decoded without and with the lexicon + word 3-gram; CER/WER against N and CPU time.
#
#   recipes/learning_curve.sh DATASET_DIR EXP_DIR [LANG]
#
# For each N in SIZES (smallest first, so partial results exist early) EXP_DIR/nN holds:
#   train.tsv   the first N lines of DATASET_DIR/train.tsv, extended to the end of the page in
#               progress (ids <page>_eSc_line_<x>, or <page>-<line> otherwise): whole pages, so
#               a size adds writers, never half a page of one
#   gmm/        GMM-HMM, STATES states per character, 1 -> MIXTURES Gaussians, ITERATIONS
#               Baum-Welch iterations per mixture stage
#   mlp/        MLP-HMM on gmm/'s forced alignments (MLP_HIDDEN, MLP_DROPOUT, MLP_MINUTES)
#   crnn/       CRNN-CTC (CRNN_MINUTES, CRNN_EPOCHS, CRNN_PATIENCE, CRNN_HALVE_AFTER: the
#               CTC plateau of small sets (blank only, CER 100 %) lasts many epochs, so the
#               full-set defaults, halve after 2 and stop after 5, would end training in it)
#   SYSTEM.time "CPU_SECONDS WALL_SECONDS" of the training (user + system time, children included)
#   SYSTEM.nolm.tsv / SYSTEM.lm.tsv   hypotheses on the first TEST_LIMIT test lines: character
#               loop (CTC: greedy) / lexicon + LM; SYSTEM.{nolm,lm}.results their CER/WER
# The HMMs decode with the calibrated defaults of their emission type (no tuning); the CRNN's
# CTC search, which has no calibrated defaults, with CTC_LM_WEIGHT and CTC_WORD_PENALTY.
# recipes/learning_curve.py EXP_DIR REF.tsv collects every size into one table.
#
# Environment (a list gives one value per size of SIZES, its last value serving the rest):
#   SIZES "100 300 1000", TEST_LIMIT 200, VALID_LIMIT 100 (validation lines of every
#   training), STATES 7, MIXTURES "2 4 8", ITERATIONS 3, MLP_HIDDEN "256,256,256 256,256,256
#   512,512,512", MLP_DROPOUT "0.2 0.2 0.1", MLP_EPOCHS 50, MLP_MINUTES "3 6 12", CRNN_MINUTES
#   "6 10 20", CRNN_EPOCHS 400, CRNN_PATIENCE 40, CRNN_HALVE_AFTER 10, JOBS 2 (the CRNN trains beside the HMM chain
#   when 2 or more), LEXICON, LM (default the shipped lexicons/LANG-50k.txt and
#   lm/LANG-3gram.arpa.gz), BEAM 150 (HMMs), CTC_BEAM 40 (the CRNN: CTC scores are
#   peaky, so a narrower beam gave the same text 10 times faster), CTC_LM_WEIGHT 0.3, CTC_WORD_PENALTY 0, SEED 0, HWR,
#   CHAINS "hmm crnn" (hmm: the GMM-HMM and the MLP-HMM; crnn: the CRNN).
set -euo pipefail
data=${1:?DATASET_DIR}; exp=${2:?EXP_DIR}; lang=${3:-fr}
SIZES=${SIZES:-"100 300 1000"}; TEST_LIMIT=${TEST_LIMIT:-200}; VALID_LIMIT=${VALID_LIMIT:-100}
STATES=${STATES:-7}; MIXTURES=${MIXTURES:-"2 4 8"}; ITERATIONS=${ITERATIONS:-3}
MLP_HIDDEN=${MLP_HIDDEN:-"256,256,256 256,256,256 512,512,512"}; MLP_DROPOUT=${MLP_DROPOUT:-"0.2 0.2 0.1"}
MLP_EPOCHS=${MLP_EPOCHS:-50}; MLP_MINUTES=${MLP_MINUTES:-"3 6 12"}
CRNN_MINUTES=${CRNN_MINUTES:-"6 10 20"}; CRNN_EPOCHS=${CRNN_EPOCHS:-400}; CRNN_PATIENCE=${CRNN_PATIENCE:-40}; CRNN_HALVE_AFTER=${CRNN_HALVE_AFTER:-10}
JOBS=${JOBS:-2}; BEAM=${BEAM:-150}; CTC_BEAM=${CTC_BEAM:-40}; CTC_LM_WEIGHT=${CTC_LM_WEIGHT:-0.3}; CTC_WORD_PENALTY=${CTC_WORD_PENALTY:-0}
SEED=${SEED:-0}; HWR=${HWR:-hybrid-hwr}; CHAINS=${CHAINS:-"hmm crnn"}
root=$(cd "$(dirname "$0")/.." && pwd)
lex=${LEXICON:-$root/lexicons/$lang-50k.txt}; lm=${LM:-$root/lm/$lang-3gram.arpa.gz}
for file in "$data/train.tsv" "$data/valid.tsv" "$data/test.tsv" "$lex" "$lm"; do
  [ -f "$file" ] || { echo "learning_curve.sh: $file not found" >&2; exit 1; }
done
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
images=$data/lines
mkdir -p "$exp"
log() { echo "$(date -u +%H:%M:%S) $*"; }

pick() {  # pick INDEX LIST: the INDEX-th word of LIST (0-based), its last word past the end
  local words; read -r -a words <<< "$2"
  if [ "$1" -lt "${#words[@]}" ]; then echo "${words[$1]}"; else echo "${words[-1]}"; fi
}

timed() {  # timed FILE COMMAND...: run COMMAND, write "CPU_SECONDS WALL_SECONDS" into FILE
  local file=$1; shift
  /usr/bin/time -f "%U %S %e" -o "$file.raw" "$@"
  awk '{printf "%.1f %.1f\n", $1 + $2, $3}' "$file.raw" > "$file" && rm -f "$file.raw"
}

score() {  # score HYP: CER/WER on the reference lines into HYP's .results
  $HWR evaluate --lang "$lang" "$ref" "$1" | awk '/^CER/{c=$2} /^WER/{w=$2} END{print c, w}' > "${1%.tsv}.results"
  log "$(basename "$1"): CER WER $(cat "${1%.tsv}.results")"
}

hmm_decode() {  # hmm_decode DIR SYSTEM: character loop and lexicon + LM from emission scores computed once
  local dir=$1 system=$2
  [ -f "$dir/$system.lm.results" ] && return 0
  $HWR emissions --model "$dir/$system" "$ref" --images "$images" -o "$dir/$system.test.npz"
  $HWR decode --model "$dir/$system" --emissions "$dir/$system.test.npz" --beam "$BEAM" \
    -o "$dir/$system.nolm.tsv" 2> "$dir/$system.nolm.log"
  score "$dir/$system.nolm.tsv"
  $HWR decode --model "$dir/$system" --emissions "$dir/$system.test.npz" --lexicon "$lex" --lm "$lm" \
    --lang "$lang" --beam "$BEAM" -o "$dir/$system.lm.tsv" 2> "$dir/$system.lm.log"
  score "$dir/$system.lm.tsv"
}

hmm_chain() {  # hmm_chain DIR INDEX: GMM-HMM, then the MLP-HMM on its alignments, each decoded
  local dir=$1 i=$2
  if [ ! -f "$dir/gmm.time" ]; then
    log "gmm train $(basename "$dir")"
    rm -rf "$dir/gmm"
    timed "$dir/gmm.time" $HWR train --train "$dir/train.tsv" --valid "$dir/valid.tsv" --images "$images" \
      --emission gmm --states "$STATES" --mixtures "$(pick "$i" "$MIXTURES")" --iterations "$ITERATIONS" \
      --shift 5 --jobs 1 -o "$dir/gmm" > "$dir/gmm.log" 2>&1
  fi
  hmm_decode "$dir" gmm
  if [ ! -f "$dir/mlp.time" ]; then
    log "mlp train $(basename "$dir")"
    rm -rf "$dir/mlp"
    timed "$dir/mlp.time" $HWR train --emission mlp --init-model "$dir/gmm" --train "$dir/train.tsv" \
      --valid "$dir/valid.tsv" --images "$images" --hidden "$(pick "$i" "$MLP_HIDDEN")" \
      --dropout "$(pick "$i" "$MLP_DROPOUT")" --context 4 --epochs "$MLP_EPOCHS" \
      --max-minutes "$(pick "$i" "$MLP_MINUTES")" --seed "$SEED" --threads 1 --jobs 1 \
      -o "$dir/mlp" > "$dir/mlp.log" 2>&1
  fi
  hmm_decode "$dir" mlp
}

crnn_chain() {  # crnn_chain DIR INDEX: CRNN-CTC, greedy and lexicon + LM
  local dir=$1 i=$2
  if [ ! -f "$dir/crnn.time" ]; then
    log "crnn train $(basename "$dir")"
    rm -rf "$dir/crnn"
    timed "$dir/crnn.time" $HWR crnn train "$dir/train.tsv" --valid "$dir/valid.tsv" --images "$images" \
      --epochs "$CRNN_EPOCHS" --patience "$CRNN_PATIENCE" --halve-after "$CRNN_HALVE_AFTER" --max-minutes "$(pick "$i" "$CRNN_MINUTES")" \
      --seed "$SEED" --threads 1 --device cpu -o "$dir/crnn" > "$dir/crnn.log" 2>&1
  fi
  [ -f "$dir/crnn.lm.results" ] && return 0
  $HWR crnn logits "$dir/crnn" "$ref" --images "$images" -o "$dir/crnn.test.npz" --greedy "$dir/crnn.nolm.tsv"
  score "$dir/crnn.nolm.tsv"
  $HWR decode --emissions "$dir/crnn.test.npz" --ctc "$dir/crnn/alphabet.txt" --lexicon "$lex" --lm "$lm" \
    --lm-weight "$CTC_LM_WEIGHT" --word-penalty "$CTC_WORD_PENALTY" --lang "$lang" --beam "$CTC_BEAM" \
    -o "$dir/crnn.lm.tsv" 2> "$dir/crnn.lm.log"
  score "$dir/crnn.lm.tsv"
}

runs() { [[ " $CHAINS " == *" $1 "* ]]; }
ref=$exp/test.ref.tsv
head -n "$TEST_LIMIT" "$data/test.tsv" > "$ref"
i=0
for n in $SIZES; do
  dir=$exp/n$n
  mkdir -p "$dir"
  # whole pages: keep going past line N until the page id changes
  awk -F '\t' -v n="$n" '{page = $1; sub(/(_eSc_line_|-)[^_-]*$/, "", page)}
    NR > n && page != last {exit} {print; last = page}' "$data/train.tsv" > "$dir/train.tsv"
  head -n "$VALID_LIMIT" "$data/valid.tsv" > "$dir/valid.tsv"
  log "size $n: $(wc -l < "$dir/train.tsv") training lines"
  if [ "$JOBS" -ge 2 ] && runs hmm && runs crnn; then
    crnn_chain "$dir" "$i" & crnn=$!
    hmm_chain "$dir" "$i"
    wait "$crnn"
  else
    if runs hmm; then hmm_chain "$dir" "$i"; fi
    if runs crnn; then crnn_chain "$dir" "$i"; fi
  fi
  i=$((i + 1))
done
log "done"
