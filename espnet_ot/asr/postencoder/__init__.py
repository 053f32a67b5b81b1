"""ESPnet postencoders of espnet-ot (registered into espnet2.tasks.asr as `cakt_adapter`)."""
