"""espnet-ot: optimal-transport knowledge transfer from a pretrained LM into CTC ASR (ESPnet plugin)."""

__version__ = "0.1.0"
