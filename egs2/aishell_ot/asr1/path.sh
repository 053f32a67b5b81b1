# Environment for the aishell_ot recipe: Python, Kaldi-style utils, sclite; sourced by asr.sh and run.sh.
# (Written for this plugin; ESPnet's TEMPLATE path.sh expects a full ESPnet tools/ tree, which we do not need.)

MAIN_ROOT=$PWD/../../..   # the espnet-ot repository

export PATH=$PWD/utils/:$PATH
export LC_ALL=C
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Use UTF-8 in Python even though LC_ALL=C (Chinese transcripts).
export PYTHONIOENCODING=UTF-8
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker,virbr,vmnet,vboxnet}"

# Python: an active virtualenv/conda wins; else the repository's .venv (made by `make install`) if present.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ] && [ -x "${MAIN_ROOT}/.venv/bin/python3" ]; then
    export PATH="${MAIN_ROOT}/.venv/bin:${PATH}"
fi

# sclite (stage 13): Debian/Ubuntu package `sctk` installs it outside PATH.
if ! command -v sclite >/dev/null 2>&1 && [ -x /usr/lib/sctk/bin/sclite ]; then
    export PATH="${PATH}:/usr/lib/sctk/bin"
fi

# Nothing in a training run may reach the network for the PLM unless the user allows it.
export HF_HUB_DISABLE_TELEMETRY=1
