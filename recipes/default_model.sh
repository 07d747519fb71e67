#!/usr/bin/env bash
# Rebuilds the bundled default model (hybrid_hwr/models/default) from the Copiste d'un jour
# dataset (CC-BY 4.0), in numbered stages (rerun from a stage number to continue):
#   1. a GMM-HMM with 7 states per character (16 Gaussians, window 9 / shift 5)
#   2. a GMM-HMM with states per character from STATES_FROM's alignments (default: stage 1's
#      model; the shipped 0.2.0 model used the 0.1.0 default model's), 16 Gaussians
#   3. the hybrid MLP-HMM on stage 2's alignments: HIDDEN layers (default 512,512,512) of
#      ReLU, context +-4, dropout DROPOUT (default 0), MLP_MINUTES of training (default 30),
#      seed 0; the epoch with the best validation frame error rate is kept. With ALIGN_FROM
#      (an MLP-HMM, e.g. an earlier default model) its forced alignments are the targets
#      instead, and stages 1 and 2 are skipped: a realignment round. Rerun from stage 3, a
#      network stopped by its budget trains on for another MLP_MINUTES (train --resume; for
#      another HIDDEN or ALIGN_FROM, remove EXP_DIR/mlp first)
#   4. the model's lexicon and word 3-gram: the ELTeC French novels (CORPORA, default the
#      corpora folder beside the data folder) plus the training transcriptions, every word
#      the model can write (113k), pruned 0,1,1; then decoding settings tuned on TUNE_LINES
#      validation lines (default 100): lexicon + LM, and open vocabulary (the same with the
#      shipped French character 4-gram spelling out-of-lexicon words), the better kept
#   5. the model, its decoder.json, lexicon and LMs copied into the package (the lexicon and
#      word LM into lexicons/ and lm/, linked from the model folder, as is the character LM)
#
#   [LAST_STAGE=N] recipes/default_model.sh ../shared/data/copiste [EXP_DIR] [FIRST_STAGE]
set -euo pipefail
data=${1:?path of the copiste dataset}; exp=${2:-exp/default_model}; stage=${3:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
last=${LAST_STAGE:-5}   # the last stage run (3: a model without touching the package)
hwr=${HWR:-hybrid-hwr}; jobs=${JOBS:-2}
mkdir -p "$exp"
align_from=${ALIGN_FROM:-}
if [ -n "$align_from" ] && [ "$stage" -le 2 ]; then stage=3; fi   # its HMMs are the model's
if [ "$stage" -le 1 ] && [ "$last" -ge 1 ] && [ -z "${STATES_FROM:-}" ]; then
  $hwr train --train "$data/train.tsv" --valid "$data/valid.tsv" --states 7 --mixtures 16 --iterations 3 \
    --shift 5 --jobs "$jobs" --resume -o "$exp/gmm7" 2>&1 | tee "$exp/gmm7.log"
fi
if [ "$stage" -le 2 ] && [ "$last" -ge 2 ]; then
  $hwr train --train "$data/train.tsv" --valid "$data/valid.tsv" --states-from "${STATES_FROM:-$exp/gmm7}" \
    --mixtures 16 --iterations 3 --jobs "$jobs" --resume -o "$exp/gmm" 2>&1 | tee "$exp/gmm.log"
fi
if [ "$stage" -le 3 ] && [ "$last" -ge 3 ]; then
  $hwr train --emission mlp --init-model "${align_from:-$exp/gmm}" --train "$data/train.tsv" --valid "$data/valid.tsv" \
    --hidden "${HIDDEN:-512,512,512}" --dropout "${DROPOUT:-0}" --epochs 30 --max-minutes "${MLP_MINUTES:-30}" --seed 0 \
    --jobs "$jobs" --resume -o "$exp/mlp" 2>&1 | tee -a "$exp/mlp.log"
fi
lexicon=fr-copiste-113k.txt; lm=fr-copiste-3gram.arpa.gz; char_lm=fr-char4gram.arpa.gz
if [ "$stage" -le 4 ] && [ "$last" -ge 4 ]; then
  corpus=${CORPORA:-$data/../../corpora}/eltec-fra.txt.xz
  $hwr lexicon "$corpus" "$data/train.tsv" --lang fr --size 200000 --alphabet-of "$exp/mlp" -o "$exp/$lexicon"
  $hwr build-lm "$corpus" "$data/train.tsv" --lang fr --order 3 --vocab "$exp/$lexicon" --prune 0,1,1 \
    --memory 3G -o "$exp/$lm"
  $hwr tune --model "$exp/mlp" --valid "$data/valid.tsv" --limit "${TUNE_LINES:-100}" \
    --lexicon "$exp/$lexicon" --lm "$exp/$lm" --char-lm "$root/lm/$char_lm" --lang fr --modes lexicon_lm open_vocab \
    --rounds 1 --jobs "$jobs" 2>&1 | tee "$exp/tune.log"
fi
if [ "$stage" -le 5 ] && [ "$last" -ge 5 ]; then
  dest="$root/hybrid_hwr/models/default"
  rm -f "$dest"/arrays-*.npz
  cp "$exp/mlp/model.json" "$exp"/mlp/arrays-*.npz "$dest/"
  rm -f "$dest"/*.txt "$dest"/*.arpa.gz
  cp "$exp/$lexicon" "$root/lexicons/$lexicon"
  cp "$exp/$lm" "$root/lm/$lm"
  ln -sf "../../../lexicons/$lexicon" "$dest/$lexicon"
  ln -sf "../../../lm/$lm" "$dest/$lm"
  ln -sf "../../../lm/$char_lm" "$dest/$char_lm"
  # the tuned settings, with the lexicon and LMs named next to the model
  python3 - "$exp/mlp/decoder.json" "$dest/decoder.json" "$lexicon" "$lm" "$char_lm" <<'PY'
import json, sys
settings = json.load(open(sys.argv[1]))
settings.update(lexicon=sys.argv[3], lm=sys.argv[4])
if settings.get("char_lm"):
    settings["char_lm"] = sys.argv[5]
json.dump(settings, open(sys.argv[2], "w"), indent=1)
open(sys.argv[2], "a").write("\n")
PY
  echo "default model written to $dest"
fi
