#!/usr/bin/env bash
# Rebuilds the bundled default model (hybrid_hwr/models/default) from the Copiste d'un jour
# dataset (CC-BY 4.0): a GMM-HMM (7 states per character, 16 Gaussians per state, window 9 /
# shift 5) trained on copiste/train.tsv, then the hybrid MLP-HMM on its forced alignments
# (1 hidden layer of 1024, context +-4 frames, 4 epochs, seed 0; it beat the GMM-HMM on
# validation: CER 41.4 vs 55.6 %, WER 71.3 vs 89.0 % on 100 valid lines with the lexicon
# and LM); decoding settings (French 50k lexicon + 3-gram, LM weight and word penalty)
# chosen on copiste/valid.tsv. MLP_EPOCHS changes the number of epochs (more is better,
# about 5 minutes each on one core).
#
#   recipes/default_model.sh ../shared/data/copiste [EXP_DIR]
set -euo pipefail
data=${1:?path of the copiste dataset}; exp=${2:-exp/copiste_gmm}
root=$(cd "$(dirname "$0")/.." && pwd)
STATES=7 MIXTURES=16 ITERATIONS=3 FRONTEND="--shift 5" "$root/recipes/gmm_hmm.sh" "$data" "$exp" 1
hwr=${HWR:-hybrid-hwr}
$hwr train --emission mlp --init-model "$exp/model" --train "$data/train.tsv" --valid "$data/valid.tsv" \
  --hidden 1024 --context 4 --epochs "${MLP_EPOCHS:-4}" --seed 0 --jobs 2 -o "$exp/mlp"
LM_WEIGHT=${LM_WEIGHT:-6} WORD_PENALTY=${WORD_PENALTY:--10}
dest="$root/hybrid_hwr/models/default"
rm -f "$dest"/arrays-*.npz
cp "$exp/mlp/model.json" "$exp"/mlp/arrays-*.npz "$dest/"
ln -sf ../../../lexicons/fr-50k.txt "$dest/fr-50k.txt"
ln -sf ../../../lm/fr-3gram.arpa.gz "$dest/fr-3gram.arpa.gz"
cat > "$dest/decoder.json" <<JSON
{"lexicon": "fr-50k.txt", "lm": "fr-3gram.arpa.gz", "lm_weight": $LM_WEIGHT, "word_penalty": $WORD_PENALTY,
 "beam": 150, "lang": "fr"}
JSON
echo "default model written to $dest"
