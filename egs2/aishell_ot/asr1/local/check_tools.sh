#!/usr/bin/env bash
# What run.sh needs besides the ESPnet checkout, checked before any stage: one line naming the remedy if absent.
# Usage: local/check_tools.sh <python> <stage> <stop_stage> <speed_perturb_factors> <skip_eval>
set -euo pipefail
python=$1 stage=$2 stop_stage=$3 speed_perturb_factors=$4 skip_eval=$5
main_root="$(cd ../../.. && pwd)"

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
