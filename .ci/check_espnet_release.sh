#!/usr/bin/env bash
# Installs espnet-ot into an environment holding another ESPnet release, as a user's ESPnet environment would,
# and checks: pip keeps that environment's espnet, torch and torchaudio; the plugin registers, trains (collect_stats
# + 1 epoch of espnet2.bin.asr_train, TOT alignment) and decodes (asr_inference CLI, Speech2Text from user code).
#
# Cheap by design (ESPnet is pure Python): the "user environment" is an overlay venv on top of BASE_PYTHON's
# environment (default .venv, from `make install`): a .pth file puts the base site-packages after the overlay's own,
# so `pip install espnet==RELEASE` there resolves against the installed torch & co. and installs only what that
# release needs differently (e.g. numpy<1.24, librosa 0.9.2); pip never removes anything from the base environment
# ("Not uninstalling ..., outside environment").
#
# Usage: .ci/check_espnet_release.sh ESPNET_RELEASE [OVERLAY_DIR]      (make compat ESPNET=202506)
# A missing prerequisite (base environment, PyPI, build deps) fails under CI=true, otherwise skips loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
release=${1:?usage: $0 ESPNET_RELEASE [OVERLAY_DIR]}
overlay=${2:-${TMPDIR:-/tmp}/espnet-ot-espnet${release}}
base_python=${BASE_PYTHON:-.venv/bin/python}
repo="$(pwd)"
log() { echo "$(date '+%H:%M:%S') check_espnet_release ${release}: $*"; }
missing() {
    if [[ "${CI:-}" =~ ^(1|true|TRUE|True|yes)$ ]]; then
        echo "check_espnet_release ${release}: FAILED (CI=true, missing prerequisite): $*" >&2
        exit 1
    fi
    echo "check_espnet_release ${release}: SKIPPED, missing prerequisite: $*" >&2
    exit 0
}
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH

# --- prerequisites ---
[ -x "${base_python}" ] && "${base_python}" -c "import torch, espnet2, pip, pytest" 2>/dev/null \
    || missing "no base environment with torch, espnet, pip and pytest at ${base_python}: run \`make install\` or set BASE_PYTHON"
probe="$(mktemp -d)"
"${base_python}" -m pip download -q --no-deps "espnet==${release}" -d "${probe}" >/dev/null 2>&1 \
    || { rm -rf "${probe}"; missing "cannot download espnet==${release} from PyPI (no network, or no such release)"; }
requires="$("${base_python}" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())' "${probe}"/espnet-*.whl | grep '^Requires-Dist:' || true)"
rm -rf "${probe}"
py311="$("${base_python}" -c 'import sys; print(int(sys.version_info >= (3, 11)))')"
# sentencepiece 0.1.97 (ESPnet 202412) has no wheel for Python >= 3.11; its sdist builds against the system library
# (Debian libsentencepiece-dev 0.1.97) or else clones GitHub.
if [ "${py311}" = 1 ] && grep -q 'sentencepiece==0\.1\.' <<<"${requires}" && ! pkg-config --exists sentencepiece; then
    missing "espnet ${release} pins $(grep -o 'sentencepiece==[0-9.]*' <<<"${requires}"), which builds from source on Python >= 3.11: apt-get install libsentencepiece-dev (or allow GitHub access)"
fi

# --- the user environment: espnet==RELEASE over the base environment ---
SECONDS=0
rm -rf "${overlay}"
"${base_python}" -m venv --without-pip "${overlay}"
python="${overlay}/bin/python"
base_site="$("${base_python}" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' | sort -u)"
overlay_site="$("${python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "${base_site}" > "${overlay_site}/zz_base_environment.pth"
# pip, minus the "Location ... is ignored" noise of machines whose pip.conf names absent local indexes
pip() { "${python}" -m pip "$@" 2>&1 | { grep -v "is ignored" || true; }; }
log "pip install espnet==${release} over $("${base_python}" -c 'import sys; print(sys.prefix)')"
pip install -q "espnet==${release}"
versions() { "${python}" -c 'import importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in ("espnet", "torch", "torchaudio")))'; }
before="$(versions)"
[ "$(cut -d' ' -f1 <<<"${before}")" = "espnet==${release}" ] || { echo "FAILED: espnet==${release} is not installed: ${before}" >&2; exit 1; }
log "user environment in ${SECONDS}s: ${before}; differs from the base: $(cd "${overlay_site}" && ls -d *.dist-info | tr '\n' ' ')"

# --- the plugin: what pip would change, then the install itself ---
SECONDS=0
report="${overlay}/plugin_install_report.json"
pip install -q --dry-run --report "${report}" -e .
would="$("${python}" -c 'import json, sys; print(" ".join("%s==%s" % (i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"]))' "${report}")"
log "pip install --dry-run --report -e . would install: ${would}"
if grep -qiE '(^| )(espnet|torch|torchaudio)==' <<<"${would}"; then
    echo "check_espnet_release ${release}: FAILED: pip would replace the environment's espnet/torch/torchaudio: ${would}" >&2
    exit 1
fi
pip install -q -e .
after="$(versions)"
log "pip install -e . done in ${SECONDS}s: ${after}"
if [ "${before}" != "${after}" ]; then
    echo "check_espnet_release ${release}: FAILED: pip replaced the environment's packages: '${before}' -> '${after}'" >&2
    exit 1
fi

# --- registration, training and inference in fresh interpreters of that environment ---
SECONDS=0
work="$(mktemp -d)"  # outside the checkout: espnet_ot comes through the overlay's install and its espnet_ot.pth hook
(cd "${work}" && "${python}" -m pytest -q -p no:cacheprovider "${repo}/tests/integration/test_espnet_entry_points.py" \
    "${repo}/tests/tasks/test_import_hook.py" -k "not plot_coupling and not every_install_mode")
rm -rf "${work}"
log "espnet ${release}: pip kept ${after}; registration, training and inference pass [${SECONDS}s]"
