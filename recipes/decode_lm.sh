#!/usr/bin/env bash
# Lexicon and n-gram LM decoding of a trained model: tune on valid, report on test.
#
#   recipes/decode_lm.sh DATASET_DIR MODEL_DIR EXP_DIR LANG [FIRST_STAGE]
#
# LANG is en, fr or generic (the tokeniser of decoding and scoring). LEXICON, LM and CHAR_LM
# name the lexicon, word LM and speller of out-of-lexicon words; by default the shipped
# lexicons/LANG-50k.txt, lm/LANG-3gram.arpa.gz and lm/LANG-char${CHAR_ORDER}gram.arpa.gz
# (CHAR_ORDER 4 or 6, default 4), which exist for en and fr only.
# Stages (each writes into EXP_DIR; rerun from a stage number to continue):
#   1. emission scores of VALID_LIMIT validation lines (one file per prior scale of
#      PRIOR_SCALES) and of the test lines (computed once: every decode below reads them with
#      --emissions; with PRIOR_SCALES the test scores wait for stage 4's tuned kappa)
#   2. grid over LM weight x word penalty (x prior scale) on those validation lines (lexicon +
#      3-gram), then over the word penalty of the lexicon without LM at the best prior scale
#      (when that mode is one of MODES)
#   3. grid over the unknown-word penalty of the open-vocabulary mode at the best settings
#   4. test: character loop, lexicon only, lexicon + 3-gram, open-vocabulary hybrid
# Decodes run JOBS at a time. Environment: JOBS (default 2), WEIGHTS, PENALTIES, LEX_PENALTIES,
# UNK_PENALTIES, BEAM (test), GRID_BEAM (validation grids, default BEAM), VALID_LIMIT,
# TEST_LIMIT (default: every test line), MODES (the test modes, default all four; stage 3
# runs only when open_vocab is one of them), LAST_STAGE (4), PRIOR_SCALES (hybrid MLP models:
# the kappa values of log p(s|x) - kappa log p(s) to tune, e.g. "0.4 0.7 1"; default: the
# model's own). grid.txt rows are: weight penalty CER WER kappa ("model": the model's own).
set -euo pipefail
data=${1:?DATASET_DIR}; model=${2:?MODEL_DIR}; exp=${3:?EXP_DIR}; lang=${4:?LANG}; stage=${5:-1}
JOBS=${JOBS:-2}; WEIGHTS=${WEIGHTS:-"3 5 8 12 16"}; PENALTIES=${PENALTIES:-"-40 -20 -10 0"}
LEX_PENALTIES=${LEX_PENALTIES:-"-240 -120 -60 -30"}
UNK_PENALTIES=${UNK_PENALTIES:-"-5 -10 -20 -40"}; BEAM=${BEAM:-500}; VALID_LIMIT=${VALID_LIMIT:-400}
TEST_LIMIT=${TEST_LIMIT:-}; LAST_STAGE=${LAST_STAGE:-4}; GRID_BEAM=${GRID_BEAM:-$BEAM}
MODES=${MODES:-"charloop lexicon lexicon_3gram open_vocab"}
CHAR_ORDER=${CHAR_ORDER:-4}; HWR=${HWR:-hybrid-hwr}
PRIOR_SCALES=${PRIOR_SCALES:-}; kappas=${PRIOR_SCALES:-model}
root=$(cd "$(dirname "$0")/.." && pwd)
lex=${LEXICON:-$root/lexicons/$lang-50k.txt}; lm=${LM:-$root/lm/$lang-3gram.arpa.gz}
clm=${CHAR_LM:-$root/lm/$lang-char${CHAR_ORDER}gram.arpa.gz}
for file in "$lex" "$lm"; do
  [ -f "$file" ] || { echo "decode_lm.sh: $file not found (set LEXICON / LM / CHAR_LM)" >&2; exit 1; }
done
mkdir -p "$exp"
export HWR model lang exp BEAM
# npz PART KAPPA: the emissions file of a split at one prior scale ("model": the model's own)
npz() { if [ "$2" = model ]; then echo "$exp/$1.npz"; else echo "$exp/$1.k$2.npz"; fi; }
# emit PART KAPPA: emission scores of $exp/PART.ref.tsv, computed again only for another model,
# a changed decoder.json (its prior_scale) or other lines (new emissions make their decodes stale)
emit() {
  local out; out=$(npz "$1" "$2")
  if ! { [ "$out" -nt "$model/model.json" ] && cmp -s "$exp/$1.ref.tsv" "$out.ref" \
         && { [ ! -e "$model/decoder.json" ] || [ "$out" -nt "$model/decoder.json" ]; }; }; then
    local scale=(); [ "$2" = model ] || scale=(--prior-scale "$2")
    $HWR emissions --model "$model" "${scale[@]}" --jobs "$JOBS" --images "$data/lines" "$exp/$1.ref.tsv" -o "$out"
    cp "$exp/$1.ref.tsv" "$out.ref"
  fi
}
score() { $HWR evaluate --lang "$lang" "$1" "$2" | awk '/^CER/{c=$2} /^WER/{w=$2} END{print c, w}'; }
# decode NAME EMISSIONS OPTIONS...: one decode of an emissions file into $exp/NAME.tsv (stderr in
# NAME.log, its options in NAME.opts, wall seconds in NAME.seconds, written last and only on
# success). A rerun skips a decode whose NAME.seconds is newer than the emissions and whose
# options are the same, so an interrupted recipe continues where it stopped.
decode() {
  local name=$1 emissions=$2; shift 2
  local opts="--model $model --beam $BEAM --lang $lang --emissions $emissions $*"
  if [ "$exp/$name.seconds" -nt "$emissions" ] && [ "$(cat "$exp/$name.opts" 2>/dev/null)" = "$opts" ]; then
    return 0
  fi
  rm -f "$exp/$name.seconds"
  echo "$opts" > "$exp/$name.opts"
  local start; start=$(date +%s.%N)
  $HWR decode --model "$model" --beam "$BEAM" --lang "$lang" --emissions "$emissions" "$@" -o "$exp/$name.tsv" \
    2> "$exp/$name.log" || { echo "decode $name failed, see $exp/$name.log" >&2; return 1; }
  awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f\n", b - a}' > "$exp/$name.seconds"
}
export -f decode

if [ "$stage" -le 1 ] && [ "$LAST_STAGE" -ge 1 ]; then
  head -n "$VALID_LIMIT" "$data/valid.tsv" > "$exp/valid.ref.tsv"
  if [ -n "$TEST_LIMIT" ]; then head -n "$TEST_LIMIT" "$data/test.tsv"; else cat "$data/test.tsv"; fi > "$exp/test.ref.tsv"
  for k in $kappas; do emit valid "$k"; done
  [ -n "$PRIOR_SCALES" ] || emit test model
fi

if [ "$stage" -le 2 ] && [ "$LAST_STAGE" -ge 2 ]; then
  tag() { [ "$1" = model ] || echo ".k$1"; }   # file-name part of a tuned prior scale
  for k in $kappas; do for w in $WEIGHTS; do for p in $PENALTIES; do
    echo "valid$(tag "$k").w$w.p$p $(npz valid "$k") --lexicon $lex --lm $lm --lm-weight $w --word-penalty $p --beam $GRID_BEAM"
  done; done; done | xargs -P "$JOBS" -L 1 bash -c 'decode "$@"' _
  : > "$exp/grid.txt"
  for k in $kappas; do for w in $WEIGHTS; do for p in $PENALTIES; do
    echo "$w $p $(score "$exp/valid.ref.tsv" "$exp/valid$(tag "$k").w$w.p$p.tsv") $k" >> "$exp/grid.txt"
  done; done; done
  sort -k4,4 -g "$exp/grid.txt" | head -n1 > "$exp/best"   # lowest WER
  cat "$exp/grid.txt"
  if [[ " $MODES " == *" lexicon "* ]]; then
    read -r _ _ _ _ k < "$exp/best"; k=${k:-model}
    for p in $LEX_PENALTIES; do
      echo "valid$(tag "$k").lex.p$p $(npz valid "$k") --lexicon $lex --word-penalty $p --beam $GRID_BEAM"
    done | xargs -P "$JOBS" -L 1 bash -c 'decode "$@"' _
    : > "$exp/grid_lex.txt"
    for p in $LEX_PENALTIES; do
      echo "$p $(score "$exp/valid.ref.tsv" "$exp/valid$(tag "$k").lex.p$p.tsv")" >> "$exp/grid_lex.txt"
    done
    sort -k3,3 -g "$exp/grid_lex.txt" | head -n1 > "$exp/best_lex"
    cat "$exp/grid_lex.txt"
  fi
fi

if [ "$stage" -le 3 ] && [ "$LAST_STAGE" -ge 3 ] && [[ " $MODES " == *" open_vocab "* ]]; then
  read -r w p _ _ k < "$exp/best"; k=${k:-model}
  for u in $UNK_PENALTIES; do
    echo "valid.unk$u $(npz valid "$k") --lexicon $lex --lm $lm --lm-weight $w --word-penalty $p --char-lm $clm --unk-penalty $u --beam $GRID_BEAM"
  done | xargs -P "$JOBS" -L 1 bash -c 'decode "$@"' _
  : > "$exp/grid_unk.txt"
  for u in $UNK_PENALTIES; do
    echo "$u $(score "$exp/valid.ref.tsv" "$exp/valid.unk$u.tsv")" >> "$exp/grid_unk.txt"
  done
  sort -k3,3 -g "$exp/grid_unk.txt" | head -n1 > "$exp/best_unk"
  cat "$exp/grid_unk.txt"
fi

if [ "$stage" -le 4 ] && [ "$LAST_STAGE" -ge 4 ]; then
  read -r w p _ _ k < "$exp/best"; k=${k:-model}
  emit test "$k"
  lp=; [ -f "$exp/best_lex" ] && read -r lp _ < "$exp/best_lex"
  u=; [ -f "$exp/best_unk" ] && read -r u _ < "$exp/best_unk"
  options() {  # the decode options of one test mode
    case $1 in
      charloop) echo "" ;;
      lexicon) echo "--lexicon $lex --word-penalty $lp" ;;
      lexicon_3gram) echo "--lexicon $lex --lm $lm --lm-weight $w --word-penalty $p" ;;
      open_vocab) echo "--lexicon $lex --lm $lm --lm-weight $w --word-penalty $p --char-lm $clm --unk-penalty $u" ;;
    esac
  }
  # (no trailing blank: xargs -L would join the next line)
  for mode in $MODES; do echo "test.$mode $(npz test "$k") $(options "$mode")" | sed 's/ *$//'; done \
    | xargs -P "$JOBS" -L 1 bash -c 'decode "$@"' _
  lines=$(wc -l < "$exp/test.ref.tsv")
  : > "$exp/test.results"
  for mode in $MODES; do
    seconds=$(cat "$exp/test.$mode.seconds")
    echo "$mode $(score "$exp/test.ref.tsv" "$exp/test.$mode.tsv") lines/s $(awk -v n="$lines" -v s="$seconds" 'BEGIN{printf "%.2f", n / s}')" \
      | tee -a "$exp/test.results"
  done
fi
