#!/usr/bin/env bash
# Links this recipe to ESPnet's egs2/TEMPLATE/asr1 (asr.sh scripts pyscripts utils steps); --clone fetches the checkout.
#
# The checkout is ${ESPNET_ROOT} if set, else ${XDG_CACHE_HOME:-~/.cache}/espnet-ot/espnet.
# Nothing from ESPnet is copied or edited: the recipe only holds symbolic links into the checkout.
#
# Usage (from egs2/aishell_ot/asr1, or from anywhere with --recipe_dir):
#   local/setup_espnet.sh                 # (re)create the links; error naming the remedy if no checkout
#   local/setup_espnet.sh --clone         # sparse-clone the ESPnet tag matching `pip show espnet` first
#   local/setup_espnet.sh --print_root    # print the checkout location that would be used and exit
#   local/setup_espnet.sh --check         # exit 0 if a usable checkout exists, 1 otherwise (no output)
# Further options: --recipe_dir DIR (where the links go), --espnet_version V (tag v.V), --espnet_url URL.
set -euo pipefail

clone=false
print_root=false
check_only=false
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
espnet_version=""       # default: the installed espnet's version (pip), e.g. 202511
espnet_url="https://github.com/espnet/espnet"

while [ $# -gt 0 ]; do
    case "$1" in
        --clone) clone=true; shift ;;
        --print_root) print_root=true; shift ;;
        --check) check_only=true; shift ;;
        --recipe_dir) recipe_dir="$2"; shift 2 ;;
        --espnet_version) espnet_version="$2"; shift 2 ;;
        --espnet_url) espnet_url="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "$0: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

default_root="${XDG_CACHE_HOME:-${HOME}/.cache}/espnet-ot/espnet"
root="${ESPNET_ROOT:-${default_root}}"
case "${root}" in /*) ;; *) root="$(pwd)/${root}" ;; esac
template="${root}/egs2/TEMPLATE/asr1"
links="asr.sh scripts pyscripts utils steps"

if "${print_root}"; then
    echo "${root}"
    exit 0
fi

# A usable checkout has the TEMPLATE and the top-level utils/ that pyscripts/utils/* link into.
usable() {
    [ -f "${template}/asr.sh" ] && [ -d "${template}/scripts" ] && [ -d "${template}/pyscripts" ] \
        && [ -d "${template}/utils" ] && [ -d "${template}/steps" ] && [ -d "${root}/utils" ]
}

# Without ESPNET_ROOT, links made earlier (e.g. with ESPNET_ROOT set) keep working if they still resolve.
if [ -z "${ESPNET_ROOT:-}" ] && ! usable && [ -L "${recipe_dir}/asr.sh" ]; then
    linked="$(readlink "${recipe_dir}/asr.sh")"
    case "${linked}" in
        */egs2/TEMPLATE/asr1/asr.sh)
            prev_root="${linked%/egs2/TEMPLATE/asr1/asr.sh}"
            if [ -d "${prev_root}/utils" ] && [ -f "${linked}" ]; then
                root="${prev_root}"; template="${root}/egs2/TEMPLATE/asr1"
            fi ;;
    esac
fi

if "${check_only}"; then
    usable
    exit $?
fi

if ! usable && "${clone}"; then
    if [ -e "${root}" ] && [ -n "$(ls -A "${root}" 2>/dev/null)" ]; then
        echo "$0: ${root} exists but is not a usable ESPnet checkout (needs egs2/TEMPLATE/asr1 and utils/);" \
            "remove it or point ESPNET_ROOT at a full ESPnet source tree" >&2
        exit 1
    fi
    command -v git >/dev/null || { echo "$0: git is required for --clone (install git)" >&2; exit 1; }
    if [ -z "${espnet_version}" ]; then
        espnet_version="$(python3 -c 'import importlib.metadata as m; print(m.version("espnet"))' 2>/dev/null || true)"
        [ -n "${espnet_version}" ] || espnet_version=202511
    fi
    # ESPnet tags releases as v.YYYYMM; accept vYYYYMM / YYYYMM too, resolved against the remote.
    tag="$(git ls-remote --tags "${espnet_url}" 2>/dev/null \
        | awk '{print $2}' | sed -e 's|^refs/tags/||' -e 's|\^{}$||' \
        | grep -E "^v?\.?${espnet_version}$" | head -n 1 || true)"
    if [ -z "${tag}" ]; then
        echo "$0: cannot find an ESPnet tag for version ${espnet_version} at ${espnet_url}" \
            "(no internet?). Set ESPNET_ROOT to an ESPnet source checkout (2025 or later) instead." >&2
        exit 1
    fi
    echo "$0: cloning ESPnet ${tag} (sparse: egs2/TEMPLATE/asr1 and utils) into ${root}"
    mkdir -p "$(dirname "${root}")"
    tmp="${root}.tmp.$$"
    rm -rf "${tmp}"
    git -c advice.detachedHead=false clone --quiet --depth 1 --branch "${tag}" --filter=blob:none --sparse "${espnet_url}" "${tmp}"
    git -C "${tmp}" sparse-checkout set egs2/TEMPLATE/asr1 utils
    rm -rf "${root}"
    mv "${tmp}" "${root}"
fi

if ! usable; then
    echo "$0: no ESPnet checkout at ${root} (needs egs2/TEMPLATE/asr1 and utils/)." \
        "Remedy: run 'make espnet' (clones ESPnet ${espnet_version:-matching pip espnet}), or set ESPNET_ROOT" \
        "to an ESPnet source checkout of 2025 or later." >&2
    exit 1
fi

# A checkout whose symbolic links were flattened into small text files that hold the link target (an archive
# unpacked without symlinks, git with core.symlinks=false; e.g. utils/run.pl containing "parallel/run.pl")
# cannot be linked as whole directories: then each directory becomes a tree of links to the checkout's files
# (marked by ${farm_mark}), every flattened link pointing at the file it stood for. Nothing is copied.
farm_mark=".espnet_links"
is_stub() {
    local f="$1" target
    [ -f "${f}" ] && [ ! -L "${f}" ] && [ ! -x "${f}" ] && [ "$(wc -c < "${f}")" -lt 256 ] || return 1
    target="$(cat "${f}")"
    [ -n "${target}" ] && [ "$(printf '%s' "${target}" | wc -l)" -eq 0 ] && [ -e "$(dirname "${f}")/${target}" ]
}
resolve() {
    local f="$1" hops=0 target
    while [ "${hops}" -lt 8 ] && is_stub "${f}"; do
        target="$(cat "${f}")"
        f="$(cd "$(dirname "${f}")/$(dirname "${target}")" && pwd)/$(basename "${target}")"
        hops=$((hops + 1))
    done
    echo "${f}"
}
flattened=false
while IFS= read -r -d '' f; do
    if is_stub "${f}"; then flattened=true; break; fi
done < <(cd "${template}" && find ${links} -type f ! -perm -u+x -size -256c -print0 | sed -z "s|^|${template}/|")

for f in ${links}; do
    target="${template}/${f}"
    dst="${recipe_dir}/${f}"
    if [ -e "${dst}" ] && [ ! -L "${dst}" ] && [ ! -f "${dst}/${farm_mark}" ]; then
        echo "$0: ${dst} exists and is not a symbolic link; refusing to replace it" >&2
        exit 1
    fi
    if "${flattened}" && [ -d "${target}" ]; then
        [ -f "${dst}/${farm_mark}" ] && [ "$(cat "${dst}/${farm_mark}")" = "${target}" ] && continue
        rm -rf "${dst}"
        mkdir -p "${dst}"
        (cd "${target}" && find . -mindepth 1 -type d -print0) | (cd "${dst}" && xargs -0 -r mkdir -p)
        while IFS= read -r -d '' file; do
            file="${file#./}"
            ln -s "$(resolve "${target}/${file}")" "${dst}/${file}"
        done < <(cd "${target}" && find . \( -type f -o -type l \) -print0)
        echo "${target}" > "${dst}/${farm_mark}"
        continue
    fi
    [ ! -f "${dst}/${farm_mark}" ] || rm -rf "${dst}"
    if [ "$(readlink "${dst}" 2>/dev/null || true)" != "${target}" ]; then
        ln -sfn "${target}" "${dst}"
    fi
done
