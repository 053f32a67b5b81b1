"""The utterances of a coupling plot: wav.scp entries and transcripts read and checked, and the output paths."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from espnet2.fileio.read_text import read_2columns_text


@dataclass
class Utterance:
    """One utterance to plot: id, 16 kHz waveform and transcript."""

    utt_id: str
    speech: np.ndarray
    text: str


def load_audio_entry(value: str) -> Tuple[np.ndarray, int]:
    """Waveform (float32, mono) and rate of one wav.scp value: a path, `cmd |`, or `file.ark:offset`."""
    import soundfile

    if value.rstrip().endswith("|"):
        import io
        import subprocess

        data = subprocess.run(value.rstrip()[:-1], shell=True, check=True, stdout=subprocess.PIPE).stdout
        x, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    elif ".ark:" in value:
        import kaldiio

        # Cast without rescaling, exactly as ESPnet's kaldi_ark loader does in training.
        loaded = kaldiio.load_mat(value)
        rate = None
        if isinstance(loaded, tuple):
            rate, x = loaded if isinstance(loaded[0], int) else loaded[::-1]
        else:
            x = loaded
        x = np.asarray(x).astype(np.float32)
    else:
        x, rate = soundfile.read(value, dtype="float32")
    if x.ndim > 1:
        x = x[:, 0]
    return x, rate


def audio_file(value: str) -> Optional[str]:
    """The file that one wav.scp value reads (a path, or the ark of `file.ark:offset`); None for `cmd |`."""
    value = value.strip()
    if value.endswith("|"):
        return None
    if ".ark:" in value:
        return value.rsplit(":", 1)[0]
    return value


def utterance_items(
    wav: Optional[Path] = None,
    text: Optional[str] = None,
    utt_id: Optional[str] = None,
    data_dir: Optional[Path] = None,
    utt_ids: Optional[Sequence[str]] = None,
    num_utts: int = 3,
) -> List[Tuple[str, str, str]]:
    """(id, wav.scp value, transcript) of the utterances to plot: one (wav + text) or those of a Kaldi data dir
    (utt_ids, or the first num_utts). Everything is checked here, before any model loads: the audio files exist
    and are audio (a `cmd |` entry is only run later)."""
    if (wav is None) == (data_dir is None):
        raise ValueError("give either --wav (with --text) or --data_dir (with --utt_ids or --num_utts)")
    if wav is not None:
        if text is None:
            raise ValueError("--wav needs its transcript: add --text '...'")
        if not Path(wav).is_file():
            raise FileNotFoundError(f"--wav {wav} {'is a directory' if Path(wav).is_dir() else 'does not exist'}")
        _check_audio(str(wav), f"--wav {wav}")
        return [(utt_id or Path(wav).stem, str(wav), text)]
    data_dir = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"--data_dir {data_dir} has no {name}")
    if not utt_ids and num_utts < 1:
        raise ValueError(f"--num_utts must be >= 1, got {num_utts} (or name the utterances with --utt_ids)")
    try:
        wavs, texts = read_2columns_text(data_dir / "wav.scp"), read_2columns_text(data_dir / "text")
    except RuntimeError as e:  # ESPnet's reader: "<key> is duplicated (<file>:<line>)"
        raise ValueError(f"--data_dir {data_dir}: {e}") from e
    ids = list(utt_ids or [u for u in sorted(texts) if u in wavs][:num_utts])
    if not ids:
        raise ValueError(f"--data_dir {data_dir}: no utterance is in both wav.scp and text")
    missing = [u for u in ids if u not in wavs or u not in texts]
    if missing:
        raise ValueError(f"--utt_ids {missing} are not in {data_dir}/wav.scp and text")
    for u in ids:
        path = audio_file(wavs[u])
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--data_dir {data_dir}: wav.scp names {path} for {u}, which does not exist")
            if ".ark:" not in wavs[u]:
                _check_audio(path, f"--data_dir {data_dir}: {u}'s audio {path}")
    return [(u, wavs[u], texts[u]) for u in ids]


def _check_audio(path: str, what: str) -> None:
    import soundfile

    try:
        soundfile.info(path)
    except Exception as e:  # soundfile's LibsndfileError / RuntimeError: not a format it reads
        raise ValueError(f"{what} is not a readable audio file ({' '.join(str(e).split())})") from None


def read_audio(expected_fs: int, items: Sequence[Tuple[str, str, str]]) -> List[Utterance]:
    """Waveforms of :func:`utterance_items`' entries; another rate than the model's is an error."""
    utts = []
    for uid, entry, transcript in items:
        x, rate = load_audio_entry(entry)
        if rate is not None and rate != expected_fs:
            raise ValueError(
                f"{uid}: audio at {rate} Hz but the model was trained at {expected_fs} Hz; resample it first"
            )
        utts.append(Utterance(uid, x, transcript))
    return utts


def check_outputs(output: Optional[Path], output_dir: Optional[Path]) -> None:
    """--output must name a .png file (not a directory: matplotlib would write DIR.png), --output_dir a directory."""
    if (output is None) == (output_dir is None):
        raise ValueError("give --output FILE.png (one utterance) or --output_dir DIR")
    if output is not None:
        if Path(output).is_dir():
            raise ValueError(
                f"--output {output} is a directory: give a file name such as {Path(output) / 'UTT.png'}, "
                f"or --output_dir {output} (one <utt_id>.png per utterance)"
            )
        if Path(output).suffix.lower() != ".png":
            raise ValueError(f"--output {output}: give a file name ending in .png (the picture is a PNG)")
    elif Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a directory: give a directory")
