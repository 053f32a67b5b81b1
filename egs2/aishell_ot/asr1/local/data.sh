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
  --download BOOL         download and unpack AISHELL-1 from openslr resource 33 when absent (default: true),
                          into an existing --aishell DIR or into db.sh's default, downloads/ (created)
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
default_aishell=downloads   # db.sh's default location: created for the download when absent (no other is)

if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
[ -n "${aishell}" ] || aishell="${AISHELL:-}"
if [ -z "${aishell}" ]; then
    log "Error: no corpus location: set AISHELL in db.sh (or the environment), or pass --aishell DIR"
    exit 2
fi
aishell="${aishell%/}"
# a path to data_aishell itself is taken for the directory holding it
if [ "$(basename "${aishell}")" = data_aishell ] && [ -d "${aishell}/wav" ]; then
    aishell="$(dirname "${aishell}")"
fi
point="point --aishell (run.sh: --local_data_opts \"--aishell DIR\"; or AISHELL in db.sh) at the directory"
point+=" that holds data_aishell/"
# Only db.sh's default location is created for a download: any other that does not exist is a wrong path.
if [ ! -d "${aishell}" ]; then
    if ! "${download}"; then
        log "Error: no AISHELL-1 corpus at ${aishell}/data_aishell (${aishell} does not exist) and --download false." \
            "Remedy: ${point}"
        exit 1
    elif [ "${aishell}" != "${default_aishell}" ]; then
        log "Error: no AISHELL-1 corpus at ${aishell}: that directory does not exist. Remedy: ${point};" \
            "or, to download AISHELL-1 (15.6 GB) into it, create it first (mkdir -p ${aishell})"
        exit 1
    fi
    mkdir -p "${aishell}"
fi
aishell="$(cd "${aishell}" && pwd)"
corpus="${aishell}/data_aishell"
transcript="${corpus}/transcript/aishell_transcript_v0.8.txt"

# ---- 1. download + unpack (skipped when the corpus is already there) ----
present() { [ -f "${transcript}" ] && [ -d "${corpus}/wav/train" ] && [ -d "${corpus}/wav/dev" ] && [ -d "${corpus}/wav/test" ]; }

leftover_tars() { ls "${corpus}"/wav/*.tar.gz >/dev/null 2>&1; }
archive="${aishell}/data_aishell.tgz"
part="${archive}.part"   # the download in progress; data_aishell.tgz exists only once complete
# an archive of the right size (downloaded earlier, or by hand) is complete
if [ ! -f "${aishell}/.data_aishell.tgz.complete" ] && [ -f "${archive}" ] \
        && [ "$(stat -c %s "${archive}")" = "${data_archive_bytes}" ]; then
    touch "${aishell}/.data_aishell.tgz.complete"
fi
if [ -f "${corpus}/.complete" ] || { present && ! leftover_tars; }; then
    log "Corpus found at ${corpus}; no download"
elif [ ! -f "${aishell}/.data_aishell.tgz.complete" ] && ! "${download}"; then
    log "Error: no AISHELL-1 corpus at ${corpus} and --download false." \
        "Remedy: ${point}, or put data_aishell.tgz from ${data_url} into ${aishell}, or drop --download false"
    exit 1
else
    if [ ! -f "${aishell}/.data_aishell.tgz.complete" ]; then
        command -v wget >/dev/null \
            || { log "Error: wget is required to download AISHELL-1 (apt-get install wget)"; exit 1; }
        # an incomplete data_aishell.tgz of an earlier version of this script is continued
        [ ! -f "${archive}" ] || mv "${archive}" "${part}"
        log "No AISHELL-1 corpus at ${corpus} (if you have a copy, stop and ${point})." \
            "Downloading ${data_url}/data_aishell.tgz (15.6 GB) into ${aishell}"
        rc=0
        wget --continue --tries=5 -O "${part}" "${data_url}/data_aishell.tgz" || rc=$?
        if [ "${rc}" -ne 0 ]; then
            if [ -s "${part}" ]; then
                kept="the partial download ${part} ($(stat -c %s "${part}") bytes) is kept for a rerun to continue"
            else
                rm -f "${part}"
                kept="nothing was kept"
            fi
            log "Error: downloading ${data_url}/data_aishell.tgz failed (wget exit ${rc}); ${kept}." \
                "Remedy: ${point}, or check the network (or give a mirror with --data_url) and rerun"
            exit 1
        fi
        size=$(stat -c %s "${part}")
        if [ "${size}" != "${data_archive_bytes}" ]; then
            rm -f "${part}"
            log "Error: the download from ${data_url} has ${size} bytes, expected ${data_archive_bytes} (deleted)." \
                "Remedy: ${point}, or give another mirror with --data_url and rerun"
            exit 1
        fi
        mv "${part}" "${archive}"
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
