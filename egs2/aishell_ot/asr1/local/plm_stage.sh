#!/usr/bin/env bash
# PLM-feature stage of run.sh (between asr.sh stages 10 and 11, so that the PLM never runs inside a training epoch).
#
# Usage: local/plm_stage.sh [options] <asr_config>
# Writes the training config of stage 11, dump/plm/conf/<name of asr_config> (local/config_plm.py: the YAML plus
# model_conf.plm and the data key plm_feats, and plm_soft_labels with model_conf.distill_weight > 0), dumps Z_L
# (and the soft labels) of the frozen PLM once for asr.sh's dumped training and validation sets (local/dump_plm_feats.sh, reused while nothing changed), and prints that config's path.
# The options are run.sh's (and asr.sh's) of the same names; all logs go to stderr.
set -euo pipefail
exec 3>&1 1>&2

python=python3
plm=
plm_feats=true
plm_nj=
nj=16
ngpu=1
dumpdir=dump
feats_type=raw
train_set=train
valid_set=dev
speed_perturb_factors=
lang=zh
token_type=char
nbpe=5000
bpemode=unigram
dump_opts=

. ./path.sh
. utils/parse_options.sh
[ $# -eq 1 ] || { echo "Usage: $0 [options] <asr_config>" >&2; exit 2; }
asr_config=$1

# where asr.sh put its data and its token list (asr.sh's own naming: data_feats, *_sp, token_listdir)
train_dir="${dumpdir}/${feats_type}/${train_set}${speed_perturb_factors:+_sp}"
valid_dir="${dumpdir}/${feats_type}/${valid_set}"
token_listdir=data/token_list
[ "${lang}" = noinfo ] || token_listdir="data/${lang}_token_list"
case "${token_type}" in
    char) token_list="${token_listdir}/char/tokens.txt"; bpemodel=none ;;
    bpe) token_list="${token_listdir}/bpe_${bpemode}${nbpe}/tokens.txt"; bpemodel="${token_listdir}/bpe_${bpemode}${nbpe}/bpe.model" ;;
    *) echo "$0: --token_type ${token_type} is not supported by this recipe (use char or bpe)" >&2; exit 2 ;;
esac

train_config="${dumpdir}/plm/conf/$(basename "${asr_config}")"
# the options of local/dump_plm_feats.sh naming the PLM and the out_dir, one line per dump (none when the config
# has no OT branch): Z_L, then, with model_conf.distill_weight > 0, the soft labels (a line starting --kind ...)
dumps=$(${python} local/config_plm.py --config "${asr_config}" --output "${train_config}" --plm "${plm}" \
    --plm_feats "${plm_feats}" --token_type "${token_type}" --feats_root "${dumpdir}/plm" \
    --train_dir "${train_dir}" --valid_dir "${valid_dir}")
mapfile -t dump_lines <<< "${dumps}"
for line in "${dump_lines[@]}"; do
    [ -n "${line}" ] || continue
    read -r -a dump_args <<< "${line}"
    kind_opts=
    if [ "${dump_args[0]}" = --kind ]; then
        kind_opts="--kind ${dump_args[1]}"
        dump_args=("${dump_args[@]:2}")
    fi
    [ -n "${plm_nj}" ] || { if [ "${ngpu}" -gt 0 ]; then plm_nj=1; else plm_nj="${nj}"; fi; }
    local/dump_plm_feats.sh --python "${python}" --nj "${plm_nj}" --ngpu "$((ngpu > 0 ? 1 : 0))" \
        --token_type "${token_type}" --token_list "${token_list}" --bpemodel "${bpemodel}" \
        --dump_opts "${dump_opts}${kind_opts:+ ${kind_opts}}" "${dump_args[@]}" "${train_dir}" "${valid_dir}"
done
echo "${train_config}" >&3
