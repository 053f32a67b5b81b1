#!/usr/bin/env bash
# Installs espnet-ot into a fresh environment that already holds another ESPnet release and torch, as a user's
# ESPnet environment would, and checks: pip keeps that environment's espnet, torch and torchaudio; the plugin
# registers, trains (collect_stats + 1 epoch through espnet2.bin.asr_train) and decodes (asr_inference,
# Speech2Text): tests/test_integration_espnet.py and tests/test_integration_hook.py run in that environment.
#
# Usage: .ci/check_espnet_release.sh ESPNET_RELEASE [TORCH_VERSION] [VENV_DIR]
#   e.g. .ci/check_espnet_release.sh 202506 2.11.0 /tmp/espnet-202506      (make compat ESPNET=202506)
# Needs PyPI. TORCH_WHEELS=DIR: also look for torch wheels in DIR (e.g. from `pip download torch==X -d DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."
release=${1:?usage: $0 ESPNET_RELEASE [TORCH_VERSION] [VENV_DIR]}
torch_version=${2:-2.11.0}
venv=${3:-${TMPDIR:-/tmp}/espnet-ot-espnet${release}}
python=${PYTHON:-python3}
log() { echo "$(date '+%H:%M:%S') check_espnet_release: $*"; }

SECONDS=0
rm -rf "${venv}"
"${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip)
"${pip[@]}" install -q "pip>=23,<24" "setuptools<74" wheel
log "user environment: torch==${torch_version} torchaudio==${torch_version} espnet==${release}"
"${pip[@]}" install -q ${TORCH_WHEELS:+--find-links "${TORCH_WHEELS}"} "torch==${torch_version}" "torchaudio==${torch_version}"
"${pip[@]}" install -q "espnet==${release}" pytest
before="$("${pip[@]}" freeze | grep -iE '^(espnet|torch|torchaudio)==' | sort)"
log "installed in $((SECONDS / 60))m$((SECONDS % 60))s: $(echo ${before})"

SECONDS=0
log "pip install . (the plugin, no constraints file)"
"${pip[@]}" install -q .
after="$("${pip[@]}" freeze | grep -iE '^(espnet|torch|torchaudio)==' | sort)"
log "plugin installed in $((SECONDS / 60))m$((SECONDS % 60))s: $(echo ${after})"
if [ "${before}" != "${after}" ]; then
    echo "check_espnet_release: FAILED: pip replaced the environment's packages: '$(echo ${before})' -> '$(echo ${after})'" >&2
    exit 1
fi

SECONDS=0
# run outside the checkout, so that espnet_ot is the installed copy (site-packages, with its espnet_ot.pth hook)
repo="$(pwd)"
work="$(mktemp -d)"
(cd "${work}" && env -u PYTHONPATH "${venv}/bin/python" -m pytest -q -p no:cacheprovider \
    "${repo}/tests/test_integration_espnet.py" "${repo}/tests/test_integration_hook.py")
rm -rf "${work}"
log "espnet ${release} + torch ${torch_version}: registration, training and inference pass [$((SECONDS / 60))m$((SECONDS % 60))s]"
