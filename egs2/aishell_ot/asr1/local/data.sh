#!/usr/bin/env bash
# AISHELL-1 data preparation (asr.sh stage 1): download when absent, then data/{train,dev,test} Kaldi-style dirs.
#
# Reads ${AISHELL}/data_aishell/wav/{train,dev,test}/<SPK>/<UTT>.wav and
# ${AISHELL}/data_aishell/transcript/aishell_transcript_v0.8.txt (AISHELL from db.sh or --aishell), and writes
# data/<set>/{wav.scp,text,utt2spk,spk2utt}: transcripts with all spaces removed, only utterances that have a
# non-empty transcript. The toy corpus (python -m espnet_ot.bin.make_toy_corpus) has the same layout.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

help_message=$(cat <<EOF
Usage: $0 [--aishell DIR] [--download true|false] [--remove_archive true|false] [--data_url URL] [--set_prefix P]
  --aishell DIR           corpus root holding data_aishell/ (default: \$AISHELL from db.sh)
  --download BOOL         download and unpack AISHELL-1 from openslr resource 33 when absent (default: true)
  --remove_archive BOOL   delete data_aishell.tgz after a successful unpack (default: false)
  --data_url URL          mirror of https://www.openslr.org/resources/33
  --set_prefix P          write data/<P>train, data/<P>dev, data/<P>test (default: none; toy mode uses toy_)
EOF
)

aishell=
download=true
remove_archive=false
data_url=https://www.openslr.org/resources/33
set_prefix=
data_archive_bytes=15582913665   # size of data_aishell.tgz on openslr

. ./db.sh
. ./path.sh
. utils/parse_options.sh

if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
[ -n "${aishell}" ] || aishell="${AISHELL:-}"
if [ -z "${aishell}" ]; then
    log "Error: no corpus location: set AISHELL in db.sh (or the environment), or pass --aishell DIR"
    exit 2
fi
mkdir -p "${aishell}"
aishell="$(cd "${aishell}" && pwd)"
corpus="${aishell}/data_aishell"
transcript="${corpus}/transcript/aishell_transcript_v0.8.txt"

# ---- 1. download + unpack (skipped when the corpus is already there) ----
present() { [ -f "${transcript}" ] && [ -d "${corpus}/wav/train" ] && [ -d "${corpus}/wav/dev" ] && [ -d "${corpus}/wav/test" ]; }

leftover_tars() { ls "${corpus}"/wav/*.tar.gz >/dev/null 2>&1; }
if [ -f "${corpus}/.complete" ] || { present && ! leftover_tars; }; then
    log "Corpus found at ${corpus}; no download"
elif ! "${download}"; then
    log "Error: no AISHELL-1 corpus at ${corpus} and --download false." \
        "Remedy: download data_aishell.tgz from ${data_url} into ${aishell}, or drop --download false"
    exit 1
else
    archive="${aishell}/data_aishell.tgz"
    if [ ! -f "${aishell}/.data_aishell.tgz.complete" ]; then
        command -v wget >/dev/null || { log "Error: wget is required to download AISHELL-1 (apt-get install wget)"; exit 1; }
        log "Downloading ${data_url}/data_aishell.tgz (15.6 GB) into ${aishell}"
        wget --continue --tries=5 -O "${archive}" "${data_url}/data_aishell.tgz"
        size=$(stat -c %s "${archive}")
        if [ "${size}" != "${data_archive_bytes}" ]; then
            log "Error: ${archive} has ${size} bytes, expected ${data_archive_bytes}; delete it and rerun"
            exit 1
        fi
        touch "${aishell}/.data_aishell.tgz.complete"
    fi
    log "Unpacking ${archive}"
    tar -xzf "${archive}" -C "${aishell}"
    # data_aishell.tgz holds one tar.gz per speaker under wav/.
    for spk_tar in "${corpus}"/wav/*.tar.gz; do
        [ -e "${spk_tar}" ] || continue
        tar -xzf "${spk_tar}" -C "${corpus}/wav"
        rm -f "${spk_tar}"
    done
    touch "${corpus}/.complete"
    if "${remove_archive}"; then
        rm -f "${archive}" "${aishell}/.data_aishell.tgz.complete"
    fi
fi

if ! present; then
    log "Error: ${corpus} lacks wav/{train,dev,test} or transcript/aishell_transcript_v0.8.txt;" \
        "delete ${corpus} and rerun to download again"
    exit 1
fi

# ---- 2. Kaldi-style data dirs ----
log "Preparing data/${set_prefix}{train,dev,test} from ${corpus}"
tmp=data/local/aishell_prep
rm -rf "${tmp}"
mkdir -p "${tmp}"
find -L "${corpus}/wav" -iname '*.wav' | sort > "${tmp}/wav.flist"
[ -s "${tmp}/wav.flist" ] || { log "Error: no .wav files under ${corpus}/wav"; exit 1; }

# utterance id -> transcript with every space removed; the first line wins for a repeated id; empty ones dropped.
awk '{ id = $1; $1 = ""; gsub(/[ \t\r]/, ""); if ($0 != "" && !(id in seen)) { seen[id] = 1; print id " " $0 } }' \
    "${transcript}" | sort -k1,1 > "${tmp}/text_all"

for x in train dev test; do
    d="data/${set_prefix}${x}"
    mkdir -p "${d}"
    grep "/wav/${x}/" "${tmp}/wav.flist" > "${tmp}/${x}.flist" || true
    if [ ! -s "${tmp}/${x}.flist" ]; then
        log "Error: no wav files under ${corpus}/wav/${x}"
        exit 1
    fi
    # <UTT> <path> and <UTT> <SPK> from .../wav/<set>/<SPK>/<UTT>.wav
    awk -F/ '{ u = $NF; sub(/\.[wW][aA][vV]$/, "", u); print u " " $0 > "'"${tmp}/${x}.wav.scp"'";
               print u " " $(NF-1) > "'"${tmp}/${x}.utt2spk"'" }' "${tmp}/${x}.flist"
    sort -k1,1 -u "${tmp}/${x}.wav.scp" -o "${tmp}/${x}.wav.scp"
    sort -k1,1 -u "${tmp}/${x}.utt2spk" -o "${tmp}/${x}.utt2spk"
    # keep only utterances that have a transcript (and transcripts that have audio)
    utils/filter_scp.pl "${tmp}/${x}.wav.scp" "${tmp}/text_all" > "${d}/text"
    utils/filter_scp.pl "${d}/text" "${tmp}/${x}.wav.scp" > "${d}/wav.scp"
    utils/filter_scp.pl "${d}/text" "${tmp}/${x}.utt2spk" > "${d}/utt2spk"
    utils/utt2spk_to_spk2utt.pl "${d}/utt2spk" > "${d}/spk2utt"
    n_wav=$(wc -l < "${tmp}/${x}.wav.scp")
    n_utt=$(wc -l < "${d}/text")
    if [ "${n_utt}" -eq 0 ]; then
        log "Error: none of the ${n_wav} wav files in ${x} has a transcript in ${transcript}"
        exit 1
    fi
    utils/validate_data_dir.sh --no-feats --non-print "${d}"
    log "${x}: ${n_utt} utterances with transcripts (of ${n_wav} wav files), $(wc -l < "${d}/spk2utt") speakers"
done
rm -rf "${tmp}"
rmdir data/local 2>/dev/null || true
log "Successfully finished. [elapsed=${SECONDS}s]"
