#!/usr/bin/env bash
# AISHELL-1 recipe for OT knowledge transfer from a PLM into CTC ASR: picks options, ESPnet's asr.sh does the work.
#
#   ./run.sh                                                   # TOT-CAKT on AISHELL-1 (downloads it when absent)
#   ./run.sh --asr_config conf/train_asr_ctc_conformer.yaml    # the baseline; switching method = switching YAML
#   ./run.sh --toy true                                        # offline smoke: toy corpus + toy PLM, baseline and TOT-CAKT
#
# Options of this script are listed below; every other option goes to asr.sh unchanged (later options win), e.g.
# --ngpu 4, --nj 16, --pretrained_model exp/.../valid.cer_ctc.ave.pth, --skip_packing false --stop_stage 14.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
SECONDS=0

# ---------------- options ----------------
toy=false             # true: offline smoke on the toy corpus and toy PLM with the tiny configs in ../../../conf/toy
toy_dir=              # toy mode: where corpus/ and plm/ are built or reused (default: <repo>/toy)
toy_corpus_opts=      # toy mode: extra options for python -m espnet_ot.bin.make_toy_corpus
toy_plm_opts=         # toy mode: extra options for python -m espnet_ot.bin.pretrain_toy_plm
asr_config=           # training YAML (default: conf/train_asr_tot_cakt.yaml; toy: baseline then TOT-CAKT)
asr_tag=              # experiment name under exp/asr_<tag> (default: config name + asr_args)
asr_args=             # extra options for espnet2.bin.asr_train, e.g. "--max_epoch 50"
pretrained_model=     # "with pretraining" condition: init from a trained baseline's .pth
plm=                  # PLM (Hugging Face name or directory); default: the one named in the config's model_conf
plm_feats=true        # dump PLM features once before training (false: the model runs the PLM inside training)
plm_nj=               # parallel jobs for the PLM dump (default: 1 with --ngpu >0, else --nj)
plm_dump_opts=        # extra options for python -m espnet_ot.bin.dump_plm_feats, e.g. "--dtype float16"
stage=1
stop_stage=13         # 14 packs the model (asr.sh stage 14)
skip_eval=false
python=python3
nj=16
inference_nj=16
ngpu=1
dumpdir=dump
expdir=exp
train_set=train
valid_set=dev
test_sets="dev test"
lang=zh
token_type=char       # char (the paper's AISHELL setting) or bpe
nbpe=5000
bpemode=unigram
speed_perturb_factors="0.9 1.0 1.1"
audio_format=flac.ark
feats_type=raw        # raw (16 kHz audio; 80-dim fbank computed by the model's frontend)

help_message="Usage: $0 [--toy true] [--asr_config conf/X.yaml] [--plm NAME_OR_DIR] [asr.sh options ...]
(see the option list at the top of $0 and README.md)"

# Options this script reads are kept; every other --name value pair is handed to asr.sh as it is.
passthrough=()
explicit_asr_config=false
toy_overrides=()      # options given explicitly, so that toy defaults don't override them
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) echo "${help_message}"; exit 0 ;;
        --*=*) echo "$0: options must be of the form --name value, got '$1'" >&2; exit 2 ;;
        --*)
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
            name="${1#--}"; name="${name//-/_}"
            case "${name}" in
                toy|toy_dir|toy_corpus_opts|toy_plm_opts|asr_config|asr_tag|asr_args|pretrained_model|plm|plm_feats|plm_nj|\
                plm_dump_opts|token_type|nbpe|bpemode|\
                stage|stop_stage|skip_eval|python|nj|inference_nj|ngpu|dumpdir|expdir|train_set|valid_set|test_sets|lang|\
                speed_perturb_factors|audio_format|feats_type)
                    printf -v "${name}" '%s' "$2"
                    toy_overrides+=("${name}")
                    [ "${name}" = asr_config ] && explicit_asr_config=true
                    ;;
                *) passthrough+=("$1" "$2") ;;
            esac
            shift 2 ;;
        *) echo "$0: unexpected argument '$1' (options are --name value pairs)" >&2; exit 2 ;;
    esac
done
for b in toy plm_feats skip_eval; do
    case "${!b}" in true|false) ;; *) echo "$0: --${b} must be true or false, got '${!b}'" >&2; exit 2 ;; esac
done
for n in stage stop_stage nj inference_nj ngpu nbpe; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "$0: --${n} must be a non-negative integer, got '${!n}'" >&2; exit 2; }
done
[[ "${plm_nj}" =~ ^[0-9]*$ ]] || { echo "$0: --plm_nj must be a positive integer, got '${plm_nj}'" >&2; exit 2; }

if [ ! -f ./run.sh ] || [ ! -f ./local/data.sh ] || [ ! -f ./conf/decode_ctc.yaml ]; then
    echo "$0: run it from the recipe directory: cd $(dirname "$0") && ./run.sh ..." >&2
    exit 2
fi
main_root="$(cd ../../.. && pwd)"   # the espnet-ot repository (conf/toy lives there)

# ---------------- ESPnet checkout, Python, sclite ----------------
local/setup_espnet.sh   # links asr.sh scripts pyscripts utils steps; one clear error naming the remedy if absent
. ./path.sh
given() { local o; for o in "${toy_overrides[@]}"; do [ "${o}" = "$1" ] && return 0; done; return 1; }

if ! ${python} -c "import espnet2, espnet_ot" 2>/dev/null; then
    echo "$0: '${python}' cannot import espnet2 and espnet_ot. Remedy: run 'make install' in ${main_root}" \
        "(creates .venv, which path.sh puts on PATH) or activate an environment with 'pip install -e ${main_root}'" >&2
    exit 1
fi
if [ -n "${speed_perturb_factors}" ] && [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ] && ! command -v sox >/dev/null; then
    echo "$0: sox not found (stage 2 speed perturbation). Remedy: 'apt-get install -y sox'," \
        "or run without it: --speed_perturb_factors \"\"" >&2
    exit 1
fi
if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ] && ! "${skip_eval}" && ! command -v sclite >/dev/null; then
    echo "$0: sclite not found (stage 13 scoring). Remedy: install SCTK, e.g. 'apt-get install -y sctk'" \
        "(path.sh adds /usr/lib/sctk/bin), or stop earlier with --stop_stage 12" >&2
    exit 1
fi

# ---------------- toy mode: corpus + PLM + tiny configs, all offline ----------------
asr_configs=()
if "${toy}"; then
    [ -n "${toy_dir}" ] || toy_dir="${main_root}/toy"
    mkdir -p "${toy_dir}"
    toy_dir="$(cd "${toy_dir}" && pwd)"
    # a reused cache keeps the options it was built with (<dir>/.toy_opts): say so when others are given
    reuse_toy() {
        local built="" opts="$2"
        [ -f "${toy_dir}/$1/.toy_opts" ] && built="$(cat "${toy_dir}/$1/.toy_opts")"
        log "Toy $1: reusing ${toy_dir}/$1"
        if [ "${built}" != "${opts}" ] && { [ -n "${opts}" ] || [ -f "${toy_dir}/$1/.toy_opts" ]; }; then
            log "WARNING: --toy_$1_opts '${opts}' ignored: ${toy_dir}/$1 was built with '${built}';" \
                "delete it or pick another --toy_dir to rebuild"
        fi
    }
    if [ ! -f "${toy_dir}/corpus/data_aishell/transcript/aishell_transcript_v0.8.txt" ]; then
        log "Toy corpus: building ${toy_dir}/corpus"
        # shellcheck disable=SC2086
        ${python} -m espnet_ot.bin.make_toy_corpus --out "${toy_dir}/corpus" ${toy_corpus_opts}
        printf '%s' "${toy_corpus_opts}" > "${toy_dir}/corpus/.toy_opts"
    else
        reuse_toy corpus "${toy_corpus_opts}"
    fi
    if [ ! -f "${toy_dir}/plm/config.json" ]; then
        log "Toy PLM: pretraining ${toy_dir}/plm"
        # shellcheck disable=SC2086
        ${python} -m espnet_ot.bin.pretrain_toy_plm --out "${toy_dir}/plm" --corpus "${toy_dir}/corpus" ${toy_plm_opts}
        printf '%s' "${toy_plm_opts}" > "${toy_dir}/plm/.toy_opts"
    else
        reuse_toy plm "${toy_plm_opts}"
    fi
    export AISHELL="${toy_dir}/corpus"
    given plm || plm="${toy_dir}/plm"
    given nj || nj=2
    given inference_nj || inference_nj=2
    given ngpu || ngpu=0
    given speed_perturb_factors || speed_perturb_factors=""
    given audio_format || audio_format=wav
    given lang || lang=zh_toy          # keeps the toy token list / stats apart from AISHELL's
    given train_set || train_set=toy_train
    given valid_set || valid_set=toy_dev
    given test_sets || test_sets="toy_test"   # toy_dev is monitored during training (valid cer_ctc)
    if ! "${explicit_asr_config}"; then
        asr_configs=("${main_root}/conf/toy/train_asr_ctc_conformer.yaml" "${main_root}/conf/toy/train_asr_tot_cakt.yaml")
    fi
    local_data_opts="--aishell ${AISHELL} --download false --set_prefix toy_"
else
    local_data_opts=""
fi
if [ ${#asr_configs[@]} -eq 0 ]; then
    asr_configs=("${asr_config:-conf/train_asr_tot_cakt.yaml}")
fi
for c in "${asr_configs[@]}"; do
    [ -f "${c}" ] || { echo "$0: --asr_config ${c} does not exist" >&2; exit 1; }
done

# token list as asr.sh names it (the PLM dump preprocesses transcripts exactly like training)
token_listdir=data/token_list
[ "${lang}" = noinfo ] || token_listdir="data/${lang}_token_list"
case "${token_type}" in
    char) token_list="${token_listdir}/char/tokens.txt"; bpemodel=none ;;
    bpe) token_list="${token_listdir}/bpe_${bpemode}${nbpe}/tokens.txt"; bpemodel="${token_listdir}/bpe_${bpemode}${nbpe}/bpe.model" ;;
    *) echo "$0: --token_type ${token_type} is not supported by this recipe (use char or bpe)" >&2; exit 2 ;;
esac

train_set_used="${train_set}"
[ -z "${speed_perturb_factors}" ] || train_set_used="${train_set}_sp"

# ---------------- one asr.sh pass per config ----------------
run_one() {
    local config="$1" first_stage="$2"
    local tag="${asr_tag}"
    # one explicit --asr_tag for several configs (toy mode): keep them apart
    if [ -n "${tag}" ] && [ ${#asr_configs[@]} -gt 1 ]; then tag+="_$(basename "${config}" .yaml)"; fi
    if [ -z "${tag}" ]; then
        tag="$(basename "${config}" .yaml)"
        "${toy}" && tag="toy_${tag}"
        [ -n "${pretrained_model}" ] && tag+="_pretrained"
        [ -n "${asr_args}" ] && tag+="$(echo "${asr_args}" | sed -e 's/--/_/g' -e 's/[ |=/]//g')"
        [ -n "${speed_perturb_factors}" ] && tag+="_sp"
    fi

    # PLM of this config ("-": none, the config has no OT branch), its model_conf key and its data name
    local cfg_plm plm_layer plm_max_length plm_key data_key
    read -r cfg_plm plm_layer plm_max_length plm_key data_key \
        < <(${python} local/config_plm.py --config "${config}" --plm "${plm}" || true)
    [ -n "${data_key:-}" ] || { echo "$0: cannot read the PLM settings of ${config}" >&2; exit 1; }

    local common=(
        --lang "${lang}"
        --feats_type "${feats_type}"
        --audio_format "${audio_format}"
        --token_type "${token_type}"
        --nbpe "${nbpe}"
        --bpemode "${bpemode}"
        --use_lm false
        --nj "${nj}"
        --inference_nj "${inference_nj}"
        --ngpu "${ngpu}"
        --python "${python}"
        --dumpdir "${dumpdir}"
        --expdir "${expdir}"
        --train_set "${train_set}"
        --valid_set "${valid_set}"
        --test_sets "${test_sets}"
        --speed_perturb_factors "${speed_perturb_factors}"
        --lm_train_text "data/${train_set}/text"
        --bpe_train_text "data/${train_set}/text"
        --local_data_opts "${local_data_opts}"
        --asr_config "${config}"
        --asr_tag "${tag}"
        --inference_config conf/decode_ctc.yaml
        --inference_asr_model valid.cer_ctc.ave.pth
        --asr_speech_fold_length 512
        --asr_text_fold_length 150
        --skip_eval "${skip_eval}"
        --skip_packing false
        --pretrained_model "${pretrained_model}"
    )

    # asr.sh stages 1-10: data, tokens, statistics (no PLM involved)
    if [ "${first_stage}" -le 10 ]; then
        ./asr.sh "${common[@]}" --stage "${first_stage}" --stop_stage "$(( stop_stage < 10 ? stop_stage : 10 ))" \
            --asr_args "${asr_args}" "${passthrough[@]}"
    fi
    [ "${stop_stage}" -ge 11 ] || return 0

    # PLM-feature stage (between asr.sh stages 10 and 11): dump Z_L once per data set, hand it to training
    local train_args="${asr_args}"
    if [ "${cfg_plm}" != - ]; then
        train_args="--model_conf ${plm_key}=${cfg_plm} --model_conf token_type=${token_type} ${train_args}"
        if "${toy}" && [ -f "${cfg_plm}/config.json" ]; then
            # toy PLMs come in several widths (make demo's, --toy_plm_opts "--hidden N"): the adapter follows
            train_args="--postencoder_conf plm_dim=$(${python} -c 'import json, sys; print(json.load(open(sys.argv[1]))["hidden_size"])' "${cfg_plm}/config.json") ${train_args}"
        fi
        if "${plm_feats}" && [ "${first_stage}" -le 11 ]; then
            local plm_dir _nj dump_args
            # one directory per PLM identity (name or path, layer, max length): experiments never share a
            # feature directory whose content another one could replace
            plm_dir="${dumpdir}/plm/$(echo "${cfg_plm}" | sed -e 's|/*$||' -e 's|.*/||')"
            plm_dir+="_$(printf '%s' "${cfg_plm}|${plm_layer}|${plm_max_length}" | cksum | cut -d' ' -f1)"
            _nj="${plm_nj}"
            [ -n "${_nj}" ] || { if [ "${ngpu}" -gt 0 ]; then _nj=1; else _nj="${nj}"; fi; }
            dump_args=(--python "${python}" --nj "${_nj}" --ngpu "$(( ngpu > 0 ? 1 : 0 ))" --plm "${cfg_plm}"
                       --plm_layer "${plm_layer}" --token_type "${token_type}" --token_list "${token_list}"
                       --bpemodel "${bpemodel}" --dump_opts "${plm_dump_opts}")
            [ "${plm_max_length}" = - ] || dump_args+=(--plm_max_length "${plm_max_length}")
            log "PLM-feature stage: ${cfg_plm} -> ${plm_dir}/{${train_set_used},${valid_set}}"
            local/dump_plm_feats.sh "${dump_args[@]}" "${plm_dir}" \
                "${dumpdir}/${feats_type}/${train_set_used}" "${dumpdir}/${feats_type}/${valid_set}"
            train_args="--allow_variable_data_keys true ${train_args}"
            train_args+=" --train_data_path_and_name_and_type ${plm_dir}/${train_set_used}/feats.scp,${data_key},kaldi_ark"
            train_args+=" --valid_data_path_and_name_and_type ${plm_dir}/${valid_set}/feats.scp,${data_key},kaldi_ark"
        fi
    fi

    # asr.sh stages 11-14: training, averaging, CTC decoding, scoring (RESULTS.md), packing
    ./asr.sh "${common[@]}" --stage "$(( first_stage > 11 ? first_stage : 11 ))" --stop_stage "${stop_stage}" \
        --asr_args "${train_args}" "${passthrough[@]}"
}

for i in "${!asr_configs[@]}"; do
    first="${stage}"
    # Later configs reuse the data, token list and statistics of the first one (same frontend).
    if [ "${i}" -gt 0 ] && [ "${first}" -lt 11 ]; then first=11; fi
    log "=== ${asr_configs[$i]} (stages ${first}-${stop_stage}) ==="
    run_one "${asr_configs[$i]}" "${first}"
done
log "Successfully finished. [elapsed=${SECONDS}s]"
