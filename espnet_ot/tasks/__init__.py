"""Registration of espnet-ot's classes into ESPnet's ASR task (kept import-light: no espnet2 here)."""
