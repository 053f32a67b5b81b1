"""The CTC forced choice among same-syllable characters (espnet_ot.toy.forced_choice) against brute force."""

import itertools
import math
import types

import numpy as np
import pytest
import soundfile
import torch

from espnet_ot.toy.forced_choice import ctc_forced_choice, forced_choice_accuracy
from espnet_ot.toy.probe import Choice


def _collapse(path, blank):
    out = [t for k, t in enumerate(path) if k == 0 or t != path[k - 1]]
    return [t for t in out if t != blank]


def _brute_log_likelihood(log_probs, target, blank):
    """log P(target) by summing over every frame path (V^T of them) that collapses to it."""
    t_len, v = log_probs.shape
    total = [
        sum(float(log_probs[i, p]) for i, p in enumerate(path))
        for path in itertools.product(range(v), repeat=t_len)
        if _collapse(list(path), blank) == list(target)
    ]
    return float(np.logaddexp.reduce(total)) if total else -math.inf


@pytest.mark.parametrize("seed", range(6))
def test_forced_choice_matches_brute_force_likelihoods(seed):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(3 * torch.randn(5, 4, generator=g), -1)  # blank 0, tokens 1..3
    targets = [1, 2]
    items = [(0, [1, 2, 3]), (1, [2, 1]), (1, [3, 2])]
    got = ctc_forced_choice(log_probs, targets, items, blank=0)
    for (j, cands), ok in zip(items, got):
        scores = {
            c: _brute_log_likelihood(log_probs, [c if k == j else t for k, t in enumerate(targets)], 0) for c in cands
        }
        true = scores[targets[j]]
        assert ok == all(true > s for c, s in scores.items() if c != targets[j]), (j, cands, scores)


def test_forced_choice_counts_an_infeasible_reference_as_wrong_and_checks_candidates():
    log_probs = torch.log_softmax(torch.zeros(2, 3), -1)  # two frames cannot emit 1, 1 (needs a blank between)
    assert ctc_forced_choice(log_probs, [1, 1], [(0, [1, 2])], blank=0) == [False]
    assert ctc_forced_choice(log_probs, [1], [], blank=0) == []
    with pytest.raises(ValueError, match="item 0: the candidates of position 0 do not include its token 1"):
        ctc_forced_choice(log_probs, [1], [(0, [2])], blank=0)


class _StubCTCModel(torch.nn.Module):
    """encode() returns, per utterance (told apart by its sample count), log posteriors spelling a fixed string."""

    def __init__(self, token_list, spelled):
        super().__init__()
        self.token_list, self.blank_id = token_list, 0
        self.spelled = spelled  # n_samples -> string the posteriors spell (one frame per character)
        self.ctc = types.SimpleNamespace(log_softmax=lambda enc: enc)

    def encode(self, speech, lengths):
        index = {t: i for i, t in enumerate(self.token_list)}
        frames = [self.spelled[int(n)] for n in lengths]
        width = max(len(f) for f in frames)
        out = torch.full((len(frames), width, len(self.token_list)), -20.0)
        for b, text in enumerate(frames):
            for i, ch in enumerate(text):
                out[b, i, index[ch]] = 0.0
        return out, torch.tensor([len(f) for f in frames])


def test_forced_choice_accuracy_reads_each_utterance_and_splits_knowledge_positions(tmp_path):
    # 他们 is heard as 他门 (们 -> 门 a men2/men5 confusion); 她 heard as 她
    tokens = ["<blank>", "<unk>", "他", "她", "们", "门"]
    spelled = {160: "他门", 80: "她"}
    wavs = {}
    for utt, n in (("u1", 160), ("u2", 80)):
        wavs[utt] = tmp_path / f"{utt}.wav"
        soundfile.write(str(wavs[utt]), np.zeros(n, dtype="float32"), 16000)
    refs = {"u1": "他们", "u2": "她"}
    choices = [
        ("u1", Choice(0, 0, ["他", "她"], plm_right=True, freq_right=True)),  # right, not a knowledge position
        ("u1", Choice(0, 1, ["们", "门"], plm_right=True, freq_right=False)),  # wrong (heard 门), knowledge
        ("u2", Choice(1, 0, ["他", "她"], plm_right=True, freq_right=False)),  # right, knowledge
        ("u2", Choice(1, 0, ["他", "她", "X"], plm_right=False, freq_right=False)),  # X not a token: left out
    ]
    res = forced_choice_accuracy(_StubCTCModel(tokens, spelled), wavs, refs, choices)
    assert res == {"knowledge_acc": 0.5, "n_knowledge": 2, "ambiguous_acc": pytest.approx(2 / 3), "n_ambiguous": 3}
