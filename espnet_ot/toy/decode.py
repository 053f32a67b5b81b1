"""Batched greedy CTC decoding of a trained ESPnet ASR model (what `asr_inference` does with beam 1, CTC weight 1)."""

from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Tuple, Union

import numpy as np
import soundfile
import torch


def load_asr_model(config: Union[str, Path], model_file: Union[str, Path]) -> torch.nn.Module:
    """Build an ESPnet ASR model from its training config and load a checkpoint, in eval mode on CPU."""
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(str(config), str(model_file), "cpu")
    return model.eval()


@torch.no_grad()
def ctc_log_posteriors(
    model: torch.nn.Module, wavs: Mapping[str, Union[str, Path]], batch_seconds: float = 60.0
) -> Iterator[Tuple[str, torch.Tensor]]:
    """(utterance, CTC log posteriors (T, V)) of each utterance, in batches of ``batch_seconds`` of audio.

    Utterances are sorted by length and batched (0 runs one utterance at a time, as ``asr_inference`` does).
    Batching is not exactly neutral: ESPnet's frontend normalisation and the conformer's convolution module see
    the padding, so the last frames of a shorter utterance in a batch can differ (measured on a toy model: 5 of 60
    greedy hypotheses changed by a character). The order and the batches only depend on the utterance lengths,
    so every model sees the same batches.
    """
    audio = {}
    for utt, path in wavs.items():
        samples, rate = soundfile.read(str(path), dtype="float32")
        audio[utt] = (samples, rate)
    order = sorted(audio, key=lambda u: len(audio[u][0]))
    i = 0
    while i < len(order):
        rate = audio[order[i]][1]
        batch = [order[i]]
        while (
            batch_seconds > 0
            and i + len(batch) < len(order)
            and len(audio[order[i + len(batch)]][0]) * (len(batch) + 1) <= batch_seconds * rate
        ):
            batch.append(order[i + len(batch)])
        i += len(batch)
        lengths = torch.tensor([len(audio[u][0]) for u in batch])
        speech = torch.zeros(len(batch), int(lengths.max()))
        for k, u in enumerate(batch):
            speech[k, : lengths[k]] = torch.from_numpy(audio[u][0])
        enc, enc_lens = model.encode(speech, lengths)
        log_probs = model.ctc.log_softmax(enc)
        for k, u in enumerate(batch):
            yield u, log_probs[k, : int(enc_lens[k])]


def greedy_ctc_decode(
    model: torch.nn.Module, wavs: Mapping[str, Union[str, Path]], batch_seconds: float = 60.0
) -> Dict[str, str]:
    """Best path of the CTC posteriors (:func:`ctc_log_posteriors`), repeats merged and blanks removed, as text
    (tokens joined, no spaces)."""
    token_list: List[str] = list(model.token_list)
    out: Dict[str, str] = {}
    for utt, log_probs in ctc_log_posteriors(model, wavs, batch_seconds):
        path = log_probs.argmax(-1).numpy()
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        ids = [int(t) for t in path[keep] if t != model.blank_id]
        out[utt] = "".join(token_list[t] for t in ids if not token_list[t].startswith("<"))
    return out
