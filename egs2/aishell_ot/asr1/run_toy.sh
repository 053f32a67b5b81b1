#!/usr/bin/env bash
# Offline smoke of run.sh: a toy corpus (AISHELL-1 layout) and a toy PLM, then run.sh for the toy baseline and the
# toy TOT-CAKT (the demo's configs, ../../../espnet_ot/toy/conf), on CPU, with no network.
#   ./run_toy.sh                                                    # both configs, stages 1-13
#   ./run_toy.sh --asr_config ../../../espnet_ot/toy/conf/gm_ot.yaml --stage 11
# The options below are this script's; any other --name value goes to run.sh (and on to asr.sh) unchanged.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

toy_dir=              # where corpus/ and plm/ are built or reused (default: <repo>/toy)
toy_corpus_opts=      # extra options for python -m espnet_ot.bin.make_toy_corpus, e.g. "--num_train 200"
toy_plm_opts=         # extra options for python -m espnet_ot.bin.pretrain_toy_plm, e.g. "--minutes 1"
asr_config=           # one config (default: ../../../espnet_ot/toy/conf/baseline.yaml, then tot_cakt.yaml)
plm=                  # default: the toy PLM, <toy_dir>/plm
stage=1
stop_stage=13
skip_eval=false
python=python3

help_message="Usage: $0 [--toy_dir DIR] [--asr_config X.yaml] [run.sh / asr.sh options ...] (README.md)"
. local/parse_options.sh   # the options above; all others are kept in ${passthrough[@]} for run.sh
[ "${stage}" -le "${stop_stage}" ] || { echo "$0: --stage ${stage} is after --stop_stage ${stop_stage}, so no stage" \
    "would run; give --stage <= --stop_stage" >&2; exit 2; }
local/setup_espnet.sh      # before minutes of toy building: the ESPnet checkout, Python, sclite are there
local/check_options.sh "$0" run.sh asr.sh -- "${passthrough[@]}"   # the others must be run.sh's or asr.sh's
. ./path.sh
local/check_tools.sh "${python}" "${stage}" "${stop_stage}" "" "${skip_eval}"
main_root="$(cd ../../.. && pwd)"
toy_dir="${toy_dir:-${main_root}/toy}"
mkdir -p "${toy_dir}" && toy_dir="$(cd "${toy_dir}" && pwd)"

# build once, or reuse: a reused cache keeps the options it was built with (<dir>/.toy_opts), say so if others are given
toy_part() {   # <corpus|plm> <file that marks it built> <options> <command ...>
    local part=$1 done=$2 opts=$3 built=""
    shift 3
    if [ ! -f "${toy_dir}/${part}/${done}" ]; then
        log "Toy ${part}: building ${toy_dir}/${part}"
        # shellcheck disable=SC2086
        "$@" ${opts}
        printf '%s' "${opts}" > "${toy_dir}/${part}/.toy_opts"
        return
    fi
    [ -f "${toy_dir}/${part}/.toy_opts" ] && built="$(cat "${toy_dir}/${part}/.toy_opts")"
    log "Toy ${part}: reusing ${toy_dir}/${part}"
    if [ "${built}" != "${opts}" ] && { [ -n "${opts}" ] || [ -f "${toy_dir}/${part}/.toy_opts" ]; }; then
        log "WARNING: --toy_${part}_opts '${opts}' ignored: ${toy_dir}/${part} was built with '${built}';" \
            "delete it or pick another --toy_dir to rebuild"
    fi
}
toy_part corpus data_aishell/transcript/aishell_transcript_v0.8.txt "${toy_corpus_opts}" \
    ${python} -m espnet_ot.bin.make_toy_corpus --out "${toy_dir}/corpus"
toy_part plm config.json "${toy_plm_opts}" \
    ${python} -m espnet_ot.bin.pretrain_toy_plm --out "${toy_dir}/plm" --corpus "${toy_dir}/corpus"

configs=("${asr_config}")
toy_conf="${main_root}/espnet_ot/toy/conf"   # the demo's configs (package data of espnet_ot.toy)
[ -n "${asr_config}" ] || configs=("${toy_conf}/baseline.yaml" "${toy_conf}/tot_cakt.yaml")
for c in "${configs[@]}"; do
    [ -f "${c}" ] || { echo "$0: --asr_config ${c} does not exist" >&2; exit 1; }
done
export AISHELL="${toy_dir}/corpus"
for i in "${!configs[@]}"; do
    first="${stage}"
    [ "${i}" -eq 0 ] || first=$((stage > 11 ? stage : 11))
    if [ "${first}" -gt "${stop_stage}" ]; then   # the later configs share the first one's stages 1-10
        log "=== ${configs[$i]}: no stage of its own up to --stop_stage ${stop_stage} ==="
        continue
    fi
    log "=== ${configs[$i]} (stages ${first}-${stop_stage}) ==="
    # toy sizes (later options, yours, win); the second config reuses the data, tokens and statistics of the first
    ./run.sh --nj 2 --inference_nj 2 --ngpu 0 --speed_perturb_factors "" --audio_format wav --lang zh_toy \
        --train_set toy_train --valid_set toy_dev --test_sets toy_test --python "${python}" --skip_eval "${skip_eval}" --plm "${plm:-${toy_dir}/plm}" \
        --local_data_opts "--aishell ${AISHELL} --download false --set_prefix toy_" "${passthrough[@]}" \
        --asr_config "${configs[$i]}" --stage "${first}" --stop_stage "${stop_stage}"
done
log "Successfully finished. [elapsed=${SECONDS}s]"
