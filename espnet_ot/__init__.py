"""espnet-ot: optimal-transport knowledge transfer from a pretrained LM into CTC ASR (ESPnet plugin)."""

__version__ = "0.1.0"


def _install_registration_hook() -> None:
    """Register into espnet2.tasks.asr now if it is imported, else as soon as anyone imports it."""
    from espnet_ot.tasks.import_hook import install

    install()


_install_registration_hook()
