#!/usr/bin/env bash
# Sourced by run.sh and run_toy.sh after their option list: each "--name value" whose name is one of the caller's
# plain variables sets it (hyphens read as underscores; later options win); every other pair is kept, in order, in
# the array `passthrough` for the script called next (asr.sh, run.sh). An option whose default is true/false takes
# only true/false, one whose default is a number only a non-negative integer; misuse ends in one line, exit 2.
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) echo "${help_message:-see the option list at the top of $0}"; exit 0 ;;
        --*=*) echo "$0: options must be of the form --name value, got '$1'" >&2; exit 2 ;;
        --*)
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
            _name="${1#--}"; _name="${_name//-/_}"
            if [[ "${_name}" =~ ^[a-z][a-z0-9_]*$ ]] && [[ "$(declare -p "${_name}" 2>/dev/null)" == "declare -- "* ]]; then
                case "${!_name}" in
                    true|false) [[ "$2" =~ ^(true|false)$ ]] \
                        || { echo "$0: --${_name} must be true or false, got '$2'" >&2; exit 2; } ;;
                    *) if [[ "${!_name}" =~ ^[0-9]+$ ]] && ! [[ "$2" =~ ^[0-9]+$ ]]; then
                           echo "$0: --${_name} must be a non-negative integer, got '$2'" >&2; exit 2
                       fi ;;
                esac
                printf -v "${_name}" '%s' "$2"
            else
                passthrough+=("$1" "$2")
            fi
            shift 2 ;;
        *) echo "$0: unexpected argument '$1' (options are --name value pairs)" >&2; exit 2 ;;
    esac
done
unset _name
