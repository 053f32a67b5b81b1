"""Mandarin speech from eSpeak NG (`cmn`), driven through ctypes with the library and data of `espeakng-loader`."""

import ctypes
import multiprocessing
import random
import threading
from dataclasses import dataclass
from math import gcd
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from espnet_ot.toy.extra import require

ESPEAK_SAMPLE_RATE = 22050

# espeak_AUDIO_OUTPUT and other constants of speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_VOLUME = 50  # eSpeak's default 100 clips at full scale; 50 peaks near -3 dBFS

# eSpeak NG voice variants used for the toy speakers ("" is the plain cmn voice).
VOICE_VARIANTS: Sequence[str] = ("", "m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7")

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class SpeakerProfile:
    """One toy speaker: an eSpeak NG voice variant with a speaking rate and pitch."""

    variant: str = ""
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50

    @property
    def voice(self) -> str:
        """eSpeak NG voice name, e.g. `cmn` or `cmn+f2`."""
        return "cmn" + (f"+{self.variant}" if self.variant else "")

    @property
    def gender(self) -> str:
        """`F` for the female variants, `M` otherwise (as in AISHELL's speaker.info)."""
        return "F" if self.variant.startswith("f") else "M"


def make_speaker_profiles(num: int, seed: int = 0, pitch_range: Optional[int] = None) -> List[SpeakerProfile]:
    """Return num distinct speakers: variants cycled in a seeded order, rate/pitch/range drawn per speaker.

    pitch_range: eSpeak's pitch range for every speaker (0 = monotone: the lexical tones are then absent from
    the pitch, only weak duration cues remain); None draws it per speaker (30..80).
    """
    if pitch_range is not None and not 0 <= pitch_range <= 100:
        raise ValueError(f"pitch_range: eSpeak's pitch range is 0..100, got {pitch_range}")
    if num < 0:
        raise ValueError(f"num: the number of speakers must be >= 0, got {num}")
    rng = random.Random(f"speakers-{seed}")
    variants = list(VOICE_VARIANTS)
    rng.shuffle(variants)
    profiles: List[SpeakerProfile] = []
    seen = set()
    i = 0
    while len(profiles) < num:
        profile = SpeakerProfile(
            variant=variants[i % len(variants)],
            rate=rng.randint(140, 200),
            pitch=rng.randint(25, 75),
            pitch_range=rng.randint(30, 80),
        )
        if pitch_range is not None:
            profile = SpeakerProfile(profile.variant, profile.rate, profile.pitch, int(pitch_range))
        i += 1
        if profile not in seen:
            seen.add(profile)
            profiles.append(profile)
    return profiles


def resample_int16(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of int16 audio, clipped back into the int16 range."""
    if orig_sr == target_sr or samples.size == 0:
        return samples.astype(np.int16, copy=True)
    from scipy.signal import resample_poly

    g = gcd(orig_sr, target_sr)
    out = resample_poly(samples.astype(np.float64), target_sr // g, orig_sr // g)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class _Engine:
    """The process-wide eSpeak NG library (espeak_Initialize sets global state, so there is one per process)."""

    _instance: Optional["_Engine"] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        espeakng_loader = require("espeakng_loader")
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        self.libc = ctypes.CDLL(None)
        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), _INITIALIZE_DONT_EXIT
        )
        if sr != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(
                f"espeak_Initialize returned {sr} (expected {ESPEAK_SAMPLE_RATE} Hz); reinstall espeakng-loader"
            )
        self._chunks: List[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: Optional[str] = None

    @classmethod
    def get(cls) -> "_Engine":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, text: str, speaker: SpeakerProfile, seed: int) -> np.ndarray:
        with self._lock:
            lib = self.lib
            # breath noise draws on eSpeak's own generator and on libc rand(): seed both per utterance
            lib.espeak_ng_SetRandSeed(int(seed))
            self.libc.srand(int(seed) & 0xFFFFFFFF)
            if speaker.voice != self._voice:
                if lib.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
                    raise ValueError(f"speaker.variant: eSpeak NG has no voice {speaker.voice!r}")
                self._voice = speaker.voice
            lib.espeak_SetParameter(_PARAM_RATE, int(speaker.rate), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(speaker.pitch), 0)
            lib.espeak_SetParameter(_PARAM_RANGE, int(speaker.pitch_range), 0)
            lib.espeak_SetParameter(_PARAM_VOLUME, _VOLUME, 0)
            self._chunks = []
            data = text.encode("utf-8")
            buf = ctypes.create_string_buffer(data)
            err = lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


def synthesize_raw(text: str, speaker: SpeakerProfile = SpeakerProfile(), seed: int = 0) -> np.ndarray:
    """Speak Mandarin text with eSpeak NG; mono int16 samples at eSpeak's own 22050 Hz.

    eSpeak NG keeps synthesis state between calls inside a process, so the same text is only reproduced
    byte for byte by a fresh process making the same sequence of calls with the same seeds
    (see `synthesize_groups`).
    """
    if not text.strip():
        raise ValueError("text: nothing to synthesize (empty text)")
    samples = _Engine.get().synthesize(text, speaker, seed)
    if samples.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {text!r} with voice {speaker.voice}")
    return samples


def synthesize(
    text: str, speaker: SpeakerProfile = SpeakerProfile(), sample_rate: int = 16000, seed: int = 0
) -> np.ndarray:
    """Speak Mandarin text with eSpeak NG and return mono int16 samples at sample_rate."""
    return resample_int16(synthesize_raw(text, speaker, seed), ESPEAK_SAMPLE_RATE, sample_rate)


def _synthesize_group(group: Sequence[Tuple[str, SpeakerProfile, int]]) -> List[np.ndarray]:
    return [synthesize_raw(text, speaker, seed) for text, speaker, seed in group]


def synthesize_groups(
    groups: Sequence[Sequence[Tuple[str, SpeakerProfile, int]]], num_workers: int = 2
) -> Iterator[List[np.ndarray]]:
    """Synthesize groups of (text, speaker, seed) at 22050 Hz, each group in its own fresh process.

    A fresh process per group makes every group's audio independent of what was synthesized before it
    (in this or another group) and of num_workers, hence reproducible. Yields one list per group, in order.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers: need >= 1 worker process, got {num_workers}")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, max(1, len(groups))), maxtasksperchild=1) as pool:
        yield from pool.imap(_synthesize_group, groups, chunksize=1)


def pad_and_dither(
    samples: np.ndarray, sample_rate: int, seed: int, pad_seconds: float = 0.15, noise_std: float = 6.0
) -> np.ndarray:
    """Add pad_seconds of silence on both sides and faint seeded Gaussian noise (no digital zeros), int16."""
    pad = np.zeros(int(round(pad_seconds * sample_rate)), dtype=np.float64)
    signal = np.concatenate([pad, samples.astype(np.float64), pad])
    if noise_std > 0:
        signal += np.random.default_rng(seed).normal(0.0, noise_std, size=signal.shape)
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)
