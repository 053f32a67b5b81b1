#!/usr/bin/env bash
# System packages the recipe's shell smoke and the pictures need: sclite (sctk), sox, a CJK font (fonts-noto-cjk).
#
# As root on Debian/Ubuntu, installs the missing ones quietly (one `apt-get update`, then one `apt-get install`);
# otherwise prints one line naming what is missing and the command that installs it. Never fails by itself:
# the tests say what is missing (a failure under CI=true, a skip naming the remedy elsewhere).
set -uo pipefail

have_sclite() { command -v sclite >/dev/null 2>&1 || [ -x /usr/lib/sctk/bin/sclite ]; }
have_sox() { command -v sox >/dev/null 2>&1; }
have_cjk_font() {
    ls /usr/share/fonts/opentype/noto/NotoSansCJK-*.ttc >/dev/null 2>&1 \
        || { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null | head -n 1)" ]; }
}

missing=()
have_sclite || missing+=(sctk)
have_sox || missing+=(sox)
have_cjk_font || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps: missing ${missing[*]}: install them with 'apt-get install -y ${missing[*]}' (as root)" >&2
    exit 0
fi
echo "system_deps: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "system_deps: apt-get could not install ${missing[*]}" >&2
fi
exit 0
