"""A font for Chinese (CJK) text in matplotlib figures, found automatically; a one-line notice when there is none."""

import functools
import os
import sys
from pathlib import Path
from typing import Optional

# A font file to use, overriding the search (e.g. a .ttf/.otf/.ttc shipped with your own installation).
FONT_ENV = "ESPNET_OT_CJK_FONT"
# Families that cover CJK characters, in order of preference (Debian/Ubuntu fonts-noto-cjk registers the
# collection's first face, "Noto Sans CJK JP", which covers all simplified Chinese characters too).
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Sans SC",
    "Noto Serif CJK SC",
    "Noto Serif CJK JP",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "Hiragino Sans GB",
    "Arial Unicode MS",
)
# File names of CJK fonts in the system font directories (found even when matplotlib's font cache predates them).
CJK_FILE_HINTS = (
    "notosanscjk",
    "notoserifcjk",
    "notosanssc",
    "sourcehan",
    "wqy",
    "droidsansfallback",
    "uming",
    "ukai",
    "simhei",
    "msyh",
    "pingfang",
    "arialuni",
)
PROBE_CHAR = "中"
INSTALL_HINT = f"apt-get install fonts-noto-cjk, or set {FONT_ENV}=/path/to/a/CJK/font"


def covers_cjk(path: str) -> bool:
    """Whether the font file (first face of a collection) has a glyph for a common Chinese character."""
    from matplotlib.ft2font import FT2Font

    try:
        return ord(PROBE_CHAR) in FT2Font(str(path)).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False


def _register(path: str) -> str:
    """Add a font file to matplotlib's font manager; its family name."""
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


@functools.lru_cache(maxsize=None)
def find_cjk_font() -> Optional[str]:
    """Family name of a font that covers CJK characters (registered with matplotlib), or None.

    Order: the file named by ``$ESPNET_OT_CJK_FONT``; a known CJK family in matplotlib's font list; a CJK font
    file in the system font directories (e.g. Debian's ``fonts-noto-cjk`` installed after matplotlib built
    its font cache).
    """
    from matplotlib import font_manager

    override = os.environ.get(FONT_ENV)
    if override:
        if not Path(override).is_file() or not covers_cjk(override):
            raise ValueError(f"{FONT_ENV}={override}: not a font file with CJK characters; unset it or fix the path")
        return _register(override)
    by_name = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, entry.fname)
    for family in CJK_FAMILIES:
        if family in by_name and covers_cjk(by_name[family]):
            return family
    for path in sorted(font_manager.findSystemFonts()):
        name = Path(path).name.lower().replace("-", "").replace("_", "")
        if any(hint in name for hint in CJK_FILE_HINTS) and "bold" not in name and covers_cjk(path):
            return _register(path)
    return None


@functools.lru_cache(maxsize=None)
def use_cjk_font(who: str = "plot") -> Optional[str]:
    """Make matplotlib draw CJK text with the found font (DejaVu Sans for the rest); None and one notice if none."""
    import matplotlib.pyplot as plt

    font = find_cjk_font()
    if font is None:
        print(f"{who}: no CJK font found, Chinese tokens are drawn as code points ({INSTALL_HINT})", file=sys.stderr)
        return None
    plt.rcParams["font.family"] = [font, "DejaVu Sans"]
    return font
