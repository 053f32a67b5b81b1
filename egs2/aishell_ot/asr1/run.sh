#!/usr/bin/env bash
# AISHELL-1: knowledge transfer from a frozen PLM into CTC ASR through optimal transport, on ESPnet's asr.sh.
#   ./run.sh                                                   # TOT-CAKT (AISHELL-1 is downloaded when absent)
#   ./run.sh --asr_config conf/train_asr_ctc_conformer.yaml    # the baseline; switching method = switching YAML
#   ./run_toy.sh                                               # offline smoke on a toy corpus and a toy PLM
# The options below are this script's; any other --name value goes to asr.sh unchanged (README.md).
set -euo pipefail

asr_config=conf/train_asr_tot_cakt.yaml
asr_args=             # extra options for espnet2.bin.asr_train, e.g. "--max_epoch 50"
plm=                  # PLM (Hugging Face name or directory); default: the config's model_conf.plm
plm_feats=true        # dump Z_L once before training (false: the model runs the PLM in every training step)
plm_nj=               # jobs of the PLM dump (default: 1 with --ngpu > 0, else --nj)
plm_dump_opts=        # extra options for python -m espnet_ot.bin.dump_plm_feats, e.g. "--dtype float16"
stage=1
stop_stage=13         # 14 also packs the model
skip_eval=false
nj=16
ngpu=1
python=python3
dumpdir=dump
train_set=train
valid_set=dev
lang=zh
token_type=char       # char (the paper's AISHELL-1 setting) or bpe
nbpe=5000
bpemode=unigram
speed_perturb_factors="0.9 1.0 1.1"
feats_type=raw        # 16 kHz audio; 80-dim fbank from the model's frontend

help_message="Usage: $0 [--asr_config conf/X.yaml] [--plm NAME_OR_DIR] [asr.sh options ...] (README.md)"
. local/parse_options.sh   # the options above (checked); all others are kept in ${passthrough[@]} for asr.sh
[[ "${plm_nj}" =~ ^[0-9]*$ ]] || { echo "$0: --plm_nj must be a positive integer, got '${plm_nj}'" >&2; exit 2; }
[ "${stage}" -le "${stop_stage}" ] || { echo "$0: --stage ${stage} is after --stop_stage ${stop_stage}, so no stage" \
    "would run; give --stage <= --stop_stage" >&2; exit 2; }
local/setup_espnet.sh      # links asr.sh, utils/, ... to the ESPnet checkout; one line naming the remedy if absent
local/check_options.sh "$0" asr.sh -- "${passthrough[@]}"   # the others must be asr.sh's (read from it), before any stage
. ./path.sh
local/check_tools.sh "${python}" "${stage}" "${stop_stage}" "${speed_perturb_factors}" "${skip_eval}"
[ -f "${asr_config}" ] || { echo "$0: --asr_config ${asr_config} does not exist" >&2; exit 1; }
# its model_conf (the model's own checks, the PLM's config.json included) now, not after the data stages
if [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ]; then
    ${python} local/config_plm.py --config "${asr_config}" --plm "${plm}" --check_only true
fi

opts=(--lang "${lang}" --token_type "${token_type}" --nbpe "${nbpe}" --bpemode "${bpemode}" --nj "${nj}"
      --ngpu "${ngpu}" --python "${python}" --dumpdir "${dumpdir}" --train_set "${train_set}"
      --valid_set "${valid_set}" --speed_perturb_factors "${speed_perturb_factors}" --skip_eval "${skip_eval}"
      --feats_type "${feats_type}" --audio_format flac.ark --test_sets "dev test" --inference_nj 16 --use_lm false
      --lm_train_text "data/${train_set}/text" --bpe_train_text "data/${train_set}/text" --skip_packing false
      --inference_config conf/decode_ctc.yaml --inference_asr_model valid.cer_ctc.ave.pth
      --asr_speech_fold_length 512 --asr_text_fold_length 150 --asr_args "${asr_args}" "${passthrough[@]}")

# asr.sh stages 1-10: data, speed perturbation, token list, statistics (no PLM involved)
if [ "${stage}" -le 10 ]; then
    ./asr.sh "${opts[@]}" --asr_config "${asr_config}" --stage "${stage}" --stop_stage "$((stop_stage < 10 ? stop_stage : 10))"
fi
[ "${stop_stage}" -ge 11 ] || exit 0
# PLM-feature stage: Z_L once per data set, and the config for stage 11 that reads it (same name: same asr_tag)
if [ "${stage}" -le 11 ]; then
    asr_config=$(local/plm_stage.sh --python "${python}" --plm "${plm}" --plm_feats "${plm_feats}" --plm_nj "${plm_nj}" \
        --nj "${nj}" --ngpu "${ngpu}" --dumpdir "${dumpdir}" --feats_type "${feats_type}" --train_set "${train_set}" \
        --valid_set "${valid_set}" --speed_perturb_factors "${speed_perturb_factors}" --lang "${lang}" \
        --token_type "${token_type}" --nbpe "${nbpe}" --bpemode "${bpemode}" --dump_opts "${plm_dump_opts}" "${asr_config}")
fi
# asr.sh stages 11-14: training, model averaging, CTC decoding, scoring (RESULTS.md), packing
./asr.sh "${opts[@]}" --asr_config "${asr_config}" --stage "$((stage > 11 ? stage : 11))" --stop_stage "${stop_stage}"
