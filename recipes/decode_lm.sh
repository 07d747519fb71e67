#!/usr/bin/env bash
# Lexicon and n-gram LM decoding of a trained model: tune on valid, report on test.
#
#   recipes/decode_lm.sh DATASET_DIR MODEL_DIR EXP_DIR LANG [FIRST_STAGE]
#
# LANG is en or fr: picks lexicons/LANG-50k.txt, lm/LANG-3gram.arpa.gz, lm/LANG-char6gram.arpa.gz.
# Stages (each writes into EXP_DIR; rerun from a stage number to continue):
#   1. grid over LM weight x word penalty on VALID_LIMIT validation lines (lexicon + 3-gram)
#   2. test: character loop, lexicon only, lexicon + 3-gram, open-vocabulary hybrid
# Environment: JOBS (default 2), WEIGHTS, PENALTIES, UNK_PENALTY, BEAM, VALID_LIMIT.
set -euo pipefail
data=${1:?DATASET_DIR}; model=${2:?MODEL_DIR}; exp=${3:?EXP_DIR}; lang=${4:?LANG}; stage=${5:-1}
JOBS=${JOBS:-2}; WEIGHTS=${WEIGHTS:-"4 8 12 16"}; PENALTIES=${PENALTIES:-"-10 0 10"}
UNK_PENALTY=${UNK_PENALTY:--10}; BEAM=${BEAM:-250}; VALID_LIMIT=${VALID_LIMIT:-200}
HWR=${HWR:-hybrid-hwr}
root=$(cd "$(dirname "$0")/.." && pwd)
lex="$root/lexicons/$lang-50k.txt"; lm="$root/lm/$lang-3gram.arpa.gz"; clm="$root/lm/$lang-char6gram.arpa.gz"
mkdir -p "$exp"
score() { $HWR evaluate "$1" "$2" | awk '/^CER/{c=$2} /^WER/{w=$2} END{print c, w}'; }

if [ "$stage" -le 1 ]; then
  head -n "$VALID_LIMIT" "$data/valid.tsv" > "$exp/valid.ref.tsv"
  : > "$exp/grid.txt"
  for w in $WEIGHTS; do for p in $PENALTIES; do
    $HWR decode --model "$model" --lexicon "$lex" --lm "$lm" --lm-weight "$w" --word-penalty "$p" \
      --beam "$BEAM" --lang "$lang" --jobs "$JOBS" --images "$data/lines" "$exp/valid.ref.tsv" -o "$exp/valid.w$w.p$p.tsv"
    echo "$w $p $(score "$exp/valid.ref.tsv" "$exp/valid.w$w.p$p.tsv")" | tee -a "$exp/grid.txt"
  done; done
  sort -k4,4 -g "$exp/grid.txt" | head -n1 > "$exp/best"   # lowest WER
fi

if [ "$stage" -le 2 ]; then
  read -r w p _ < "$exp/best"
  run() {  # name, decode options...
    local name=$1; shift
    local start; start=$(date +%s)
    $HWR decode --model "$model" --beam "$BEAM" --lang "$lang" --jobs "$JOBS" "$@" "$data/test.tsv" -o "$exp/test.$name.tsv"
    echo "$name $(score "$data/test.tsv" "$exp/test.$name.tsv") seconds $(( $(date +%s) - start ))" | tee -a "$exp/test.results"
  }
  : > "$exp/test.results"
  run charloop
  run lexicon --lexicon "$lex" --word-penalty "$p"
  run lexicon_3gram --lexicon "$lex" --lm "$lm" --lm-weight "$w" --word-penalty "$p"
  run open_vocab --lexicon "$lex" --lm "$lm" --lm-weight "$w" --word-penalty "$p" --char-lm "$clm" --unk-penalty "$UNK_PENALTY"
fi
