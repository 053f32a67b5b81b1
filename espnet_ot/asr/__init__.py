"""ESPnet ASR components of espnet-ot: the CAKT adapter, the frozen PLM text branch and the OT-CTC model."""
