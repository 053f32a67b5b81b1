#!/usr/bin/env bash
# PLM-feature stage: Z_L of the frozen PLM for every utterance of one or more Kaldi text files, computed once.
#
# Writes <out_dir>/<set>/feats.scp for each <data_dir>/text given (<set> = basename of <data_dir>); the arks are
# in <out_dir>/data.<time>.<pid>. `python -m espnet_ot.bin.dump_plm_feats` runs on each distinct transcript only
# (speed-perturbed copies sp0.9-X / sp1.1-X and repeated sentences share one ark entry), in one pass over all
# sets, split over --nj jobs launched with ${train_cmd} (or ${cuda_cmd} --gpu 1 with --ngpu 1). A finished dump
# is reused while the PLM, its options, the token list and the texts are unchanged (<out_dir>/.done). A new dump
# replaces the previous one (arks, feats.scp files, .done) only once it is complete: a failed re-run keeps it.
#
# Usage: local/dump_plm_feats.sh [options] --plm NAME_OR_DIR <out_dir> <data_dir> [<data_dir> ...]
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

help_message=$(cat <<EOF
Usage: $0 [options] --plm NAME_OR_DIR <out_dir> <data_dir> [<data_dir> ...]
  --plm NAME_OR_DIR     Hugging Face model name or local save_pretrained directory (required)
  --python CMD          Python with espnet_ot installed (default: python3)
  --nj N                parallel jobs (default: 1)
  --ngpu 0|1            run each job on one GPU (default: 0, CPU)
  --plm_layer N         hidden layer used as Z_L, as model_conf.plm_layer (default: -1, last)
  --plm_max_length N    cap on PLM positions, as model_conf.plm_max_length (default: the PLM's)
  --token_list FILE     CTC token list: transcripts go through ESPnet's text preprocessing as in training
  --token_type TYPE     char | bpe | word | hugging_face (with --token_list; default: char)
  --bpemodel FILE       sentencepiece model for --token_type bpe (default: none)
  --batch_size N        utterances per PLM call (default: 64)
  --dump_opts "..."     further options for python -m espnet_ot.bin.dump_plm_feats (e.g. "--dtype float16")
EOF
)

plm=
python=python3
nj=1
ngpu=0
plm_layer=-1
plm_max_length=
token_list=
token_type=char
bpemodel=none
batch_size=64
dump_opts=

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

if [ $# -lt 2 ]; then
    echo "${help_message}" >&2
    exit 2
fi
out_dir=$1
shift
data_dirs=("$@")
if [ -z "${plm}" ] || [ "${plm}" = - ]; then
    echo "$0: --plm is required (a Hugging Face model name or a local PLM directory)" >&2
    exit 2
fi
for d in "${data_dirs[@]}"; do
    [ -f "${d}/text" ] || { echo "$0: no ${d}/text (run asr.sh stages 1-4 first)" >&2; exit 1; }
done
[ -z "${token_list}" ] || [ -f "${token_list}" ] \
    || { echo "$0: --token_list ${token_list} does not exist (run asr.sh stage 5 first)" >&2; exit 1; }

# What the features depend on; a dump with the same signature is reused.
checksum() { if [ -n "$1" ] && [ -f "$1" ]; then cksum < "$1" | awk '{print $1 "-" $2}'; else echo none; fi; }
signature="plm=${plm} plm_layer=${plm_layer} plm_max_length=${plm_max_length:-default} token_type=${token_type}"
signature+=" token_list=$(checksum "${token_list}") bpemodel=$(checksum "${bpemodel}") dump_opts=${dump_opts}"
for d in "${data_dirs[@]}"; do
    signature+=" $(basename "${d}")=$(checksum "${d}/text")"
done

# One dump at a time per <out_dir> (experiments started together share it).
mkdir -p "$(dirname "${out_dir}")"
exec 9> "${out_dir}.lock"
flock 9
if [ -f "${out_dir}/.done" ] && [ "$(cat "${out_dir}/.done")" = "${signature}" ]; then
    log "Reusing ${out_dir} (same PLM, options and texts)"
    exit 0
fi

# the new dump: a fresh ark directory and <set>/feats.scp.new, removed if anything fails; the previous one stays
rm -rf "${out_dir}/split" "${out_dir}/log"
mkdir -p "${out_dir}/split" "${out_dir}/log"
ark_dir="${out_dir}/data.$(date +%Y%m%d%H%M%S).$$"
mkdir "${ark_dir}"
new_scps=()
for d in "${data_dirs[@]}"; do
    new_scps+=("${out_dir}/$(basename "${d}")/feats.scp.new")
done
discard_new() { rm -rf "${ark_dir}" "${new_scps[@]}"; }
trap discard_new EXIT

# 1. one representative utterance per distinct transcript over all sets (ids are made unique per set)
for d in "${data_dirs[@]}"; do
    awk -v set="$(basename "${d}")" '{ print set "/" $0 }' "${d}/text"
done > "${out_dir}/text.all"
awk -v uniq="${out_dir}/text.uniq" -v map="${out_dir}/utt2rep" '{
        id = $1; t = $0; sub(/^[^ \t]+[ \t]*/, "", t);
        if (!(t in rep)) { rep[t] = id; print $0 > uniq }
        print id, rep[t] > map
    }' "${out_dir}/text.all"
n_all=$(wc -l < "${out_dir}/utt2rep")
n_uniq=$(wc -l < "${out_dir}/text.uniq")
[ "${n_uniq}" -gt 0 ] || { echo "$0: the text files are empty" >&2; exit 1; }
_nj=$(( nj < n_uniq ? nj : n_uniq ))
log "PLM ${plm}: ${n_uniq} distinct transcripts of ${n_all} utterances (${data_dirs[*]}), ${_nj} job(s)"

split_texts=""
for n in $(seq "${_nj}"); do
    split_texts+=" ${out_dir}/split/text.${n}"
done
# shellcheck disable=SC2086
utils/split_scp.pl "${out_dir}/text.uniq" ${split_texts}

# 2. the dump jobs
opts="--plm ${plm} --plm_layer ${plm_layer} --batch_size ${batch_size}"
[ -z "${plm_max_length}" ] || opts+=" --plm_max_length ${plm_max_length}"
if [ -n "${token_list}" ]; then
    opts+=" --token_list ${token_list} --token_type ${token_type}"
    [ "${bpemodel}" = none ] || opts+=" --bpemodel ${bpemodel}"
fi
if [ "${ngpu}" -gt 0 ]; then
    _cmd="${cuda_cmd} --gpu 1"
    opts+=" --device cuda"
else
    _cmd="${train_cmd}"
fi
# shellcheck disable=SC2086
${_cmd} JOB=1:"${_nj}" "${out_dir}/log/dump_plm_feats.JOB.log" \
    ${python} -m espnet_ot.bin.dump_plm_feats \
        --text "${out_dir}/split/text.JOB" \
        --output_dir "${ark_dir}" \
        --name "feats.JOB" \
        ${opts} ${dump_opts} \
    || { echo "$0: PLM dump failed; see ${out_dir}/log/dump_plm_feats.*.log:" >&2;
         tail -n 5 "${out_dir}"/log/dump_plm_feats.*.log >&2; exit 1; }

# 3. <out_dir>/<set>/feats.scp for every utterance, pointing at its representative's ark entry
for n in $(seq "${_nj}"); do
    cat "${ark_dir}/feats.${n}.scp"
done > "${out_dir}/rep.scp"
for d in "${data_dirs[@]}"; do
    set_name="$(basename "${d}")"
    mkdir -p "${out_dir}/${set_name}"
    awk -v set="${set_name}" 'NR == FNR { loc[$1] = $2; next }
         index($1, set "/") == 1 {
             if (!($2 in loc)) { print "missing PLM features for " $2 > "/dev/stderr"; exit 1 }
             print substr($1, length(set) + 2), loc[$2]
         }' "${out_dir}/rep.scp" "${out_dir}/utt2rep" | sort -k1,1 > "${out_dir}/${set_name}/feats.scp.new"
    n_text=$(wc -l < "${d}/text")
    n_out=$(wc -l < "${out_dir}/${set_name}/feats.scp.new")
    if [ "${n_out}" -ne "${n_text}" ]; then
        echo "$0: ${out_dir}/${set_name}/feats.scp has ${n_out} entries for ${n_text} utterances" >&2
        exit 1
    fi
done

# 4. complete: the new feats.scp files replace the previous ones (no .done in between), then the previous arks go
rm -f "${out_dir}/.done"
for d in "${data_dirs[@]}"; do
    set_name="$(basename "${d}")"
    mv "${out_dir}/${set_name}/feats.scp.new" "${out_dir}/${set_name}/feats.scp"
    log "Wrote ${out_dir}/${set_name}/feats.scp ($(wc -l < "${out_dir}/${set_name}/feats.scp") utterances)"
done
echo "${signature}" > "${out_dir}/.done"
trap - EXIT
# what pointed at the previous arks goes with them: their directories and the feats.scp of sets not dumped now
for old in "${out_dir}"/data "${out_dir}"/data.*; do
    [ ! -e "${old}" ] || [ "${old}" = "${ark_dir}" ] || rm -rf "${old}"
done
for scp in "${out_dir}"/*/feats.scp; do
    [ -e "${scp}" ] || continue
    [[ " ${new_scps[*]} " == *" ${scp}.new "* ]] || rm -f "${scp}"
done
