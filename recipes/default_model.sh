#!/usr/bin/env bash
# Rebuilds the bundled default model (hybrid_hwr/models/default) from the Copiste d'un jour
# dataset (CC-BY 4.0): GMM-HMM, 7 states per character, 16 Gaussians per state, window 9 /
# shift 5, trained on copiste/train.tsv with copiste/valid.tsv for the likelihood curve;
# decoding settings (French 50k lexicon + 3-gram, LM weight and word penalty) chosen on
# copiste/valid.tsv.
#
#   recipes/default_model.sh ../shared/data/copiste [EXP_DIR]
set -euo pipefail
data=${1:?path of the copiste dataset}; exp=${2:-exp/copiste_gmm}
root=$(cd "$(dirname "$0")/.." && pwd)
STATES=7 MIXTURES=16 ITERATIONS=3 FRONTEND="--shift 5" "$root/recipes/gmm_hmm.sh" "$data" "$exp" 1
LM_WEIGHT=${LM_WEIGHT:-16} WORD_PENALTY=${WORD_PENALTY:--10}
dest="$root/hybrid_hwr/models/default"
rm -f "$dest"/arrays-*.npz
cp "$exp/model/model.json" "$exp"/model/arrays-*.npz "$dest/"
ln -sf ../../../lexicons/fr-50k.txt "$dest/fr-50k.txt"
ln -sf ../../../lm/fr-3gram.arpa.gz "$dest/fr-3gram.arpa.gz"
cat > "$dest/decoder.json" <<JSON
{"lexicon": "fr-50k.txt", "lm": "fr-3gram.arpa.gz", "lm_weight": $LM_WEIGHT, "word_penalty": $WORD_PENALTY,
 "beam": 150, "lang": "fr"}
JSON
echo "default model written to $dest"
