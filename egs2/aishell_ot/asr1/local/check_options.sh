#!/usr/bin/env bash
# The options that run.sh / run_toy.sh pass on (${passthrough[@]}) must be options of the scripts they go to, so
# that a misspelt one ends before any stage rather than after hours of stages. A script's options are read from
# the script itself at run time: the variables it sets at its top level before it sources parse_options.sh (as
# ESPnet's utils/parse_options.sh accepts exactly those, and --config), so they follow the ESPnet checkout in use.
# Usage: local/check_options.sh <caller> <script> [<script> ...] -- [--name value ...]
set -euo pipefail
caller=$1
shift
scripts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    scripts+=("$1")
    shift
done
[ $# -eq 0 ] || shift

# one name a line: top-level assignments up to the line that sources parse_options.sh (here-documents skipped)
options_of() {
    awk '
        in_doc { if ($0 ~ "^[[:space:]]*" term "[[:space:]]*$") in_doc = 0; next }
        /^[[:space:]]*\.[[:space:]]+[^[:space:]]*parse_options\.sh/ { found = 1; if ($2 ~ /^utils\//) print "config"; exit }
        /^[a-z][a-z0-9_]*=/ { name = $0; sub(/=.*/, "", name); if (name != "help_message") print name }
        /<</ { t = $0; sub(/.*<<-?[[:space:]]*/, "", t); gsub(/["\047]/, "", t); sub(/[^A-Za-z0-9_].*/, "", t)
               if (t != "") { term = t; in_doc = 1 } }
        END { if (!found) exit 1 }
    ' "$1"
}

known=" "
for script in "${scripts[@]}"; do
    if ! names=$(options_of "${script}") || [ -z "${names}" ]; then
        echo "${caller}: WARNING: cannot read the options of ${script} (no parse_options.sh line); not checking them" >&2
        exit 0
    fi
    known+="$(echo "${names}" | tr '\n' ' ')"
done

names=("${caller##*/}" "${scripts[@]##*/}")
list="${names[*]:0:${#names[@]}-1}"
list="${list// /, } or ${names[-1]}"
while [ $# -ge 2 ]; do
    name="${1#--}"
    name="${name//-/_}"
    if [[ "${known}" != *" ${name} "* ]]; then
        echo "${caller}: unknown option $1: not an option of ${list} (their options are the variables at the" \
            "top of each script)" >&2
        exit 2
    fi
    shift 2
done
