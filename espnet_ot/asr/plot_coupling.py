"""Couplings gamma between a trained espnet_ot model's H_A and the PLM's Z_L, drawn as heat maps (TOT-CAKT Fig. 2).

The model is asked for everything: its :class:`~espnet_ot.ot.config.AlignmentConfig`, its PLM and its frame
shift (measured by encoding a test signal), never a re-read of the YAML. CLI: ``python -m espnet_ot.bin.plot_coupling``.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_ot.asr.plot_coupling_inputs import Utterance, check_outputs, read_audio, utterance_items
from espnet_ot.ot.config import METHODS, AlignmentConfig
from espnet_ot.utils.fonts import use_cjk_font

METHOD_TITLES = {"ot": "OT (no temporal prior)", "tot": "TOT (temporal prior)", "gmot": "GM-OT (FGW)"}
assert set(METHOD_TITLES) == set(METHODS)


@dataclass
class Panel:
    """One coupling picture: gamma (frames x tokens), its labels and diagnostics."""

    title: str
    coupling: np.ndarray
    tokens: List[str]
    band_mass: float
    frame_shift_s: Optional[float]


# ----------------------------------------------------------------------------------------- model side
class LoadedModel:
    """A trained espnet_ot model with what is needed to get H_A and Z_L for a transcript."""

    def __init__(self, config: Path, model_file: Path, device: str, plm: Optional[str], label: Optional[str]):
        """Load the model (ASRTask.build_model_from_file); the PLM is loaded only when Z_L is computed."""
        from espnet2.tasks.asr import ASRTask

        from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter

        for path, field in ((config, "--asr_train_config"), (model_file, "--asr_model_file")):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{field} {path} does not exist")
        self.model, self.train_args = ASRTask.build_model_from_file(str(config), str(model_file), device)
        self.model.eval()
        self.device = device
        if not isinstance(getattr(self.model, "postencoder", None), CAKTAdapter) or not hasattr(
            self.model, "alignment_config"
        ):
            raise ValueError(
                f"--asr_train_config {config}: the model has no cakt_adapter postencoder, so it has no H_A; "
                "plot_coupling needs an espnet_ot model trained with `postencoder: cakt_adapter`"
            )
        # The model's own settings (validated when it was built), never re-read from the YAML.
        model = self.model
        self.alignment = model.alignment
        self.alignment_config: AlignmentConfig = model.alignment_config or AlignmentConfig()
        self.include_special = model.ot_include_special
        own = model.plm_branch
        self.plm_name = plm or (own.name_or_path if own is not None else None)
        self.plm_layer = own.layer if own is not None else -1
        self.plm_max_length = own.max_length_override if own is not None else None
        self.token_type = model.token_type
        self.token_hf_model = model.token_hf_model
        self.label = label or Path(config).parent.name
        self.preprocess = ASRTask.build_preprocess_fn(self.train_args, train=False)
        self._branch = None
        self._detok = None
        frontend_conf = dict(self.train_args.frontend_conf or {})
        self.fs = int(frontend_conf.get("fs", 16000))
        self.frame_shift_s = self._frame_shift()

    def _frame_shift(self, seconds: float = 8.0) -> Optional[float]:
        """Seconds per H_A frame, asked from the model itself: the frames it gives for `seconds` of audio.

        None for a model without a frontend: its input is a feature sequence, not a waveform (and 8 s of samples
        taken as frames would make an attention matrix of tens of GB).
        """
        if getattr(self.model, "frontend", None) is None:
            return None
        noise = np.random.default_rng(0).standard_normal(int(seconds * self.fs)).astype(np.float32) * 0.1
        try:
            frames = self.h_a(noise).size(0)
        except Exception as e:  # a model that cannot encode noise still plots, without the time axis unit
            logging.warning(f"{self.label}: could not measure the frame shift ({e})")
            return None
        return round(seconds / frames, 3) if frames else None

    def text_ids(self, utt_id: str, text: str) -> List[int]:
        """CTC token ids of a transcript, through ESPnet's own preprocessing (as in training)."""
        return [int(i) for i in self.preprocess(utt_id, {"text": text})["text"]]

    @torch.no_grad()
    def h_a(self, speech: np.ndarray) -> torch.Tensor:
        """H_A (La, d_t) of one waveform: frontend -> normalize -> encoder -> adapter FC2."""
        x = torch.as_tensor(speech, dtype=torch.float32, device=self.device)[None]
        lengths = torch.tensor([x.size(1)], dtype=torch.long, device=self.device)
        with self.model.postencoder.capture() as captured:
            self.model.encode(x, lengths)
        return captured.h_a[0, : int(captured.lengths[0])].float()

    def plm_branch(self):
        """The frozen PLM (loaded once)."""
        from espnet_ot.asr.plm import PLMTextBranch

        if self._branch is None:
            if not self.plm_name:
                raise ValueError(
                    f"{self.label}: the config has no model_conf.plm: pass --plm NAME_OR_DIR or --plm_feats feats.scp"
                )
            self._branch = PLMTextBranch(
                self.plm_name, layer=self.plm_layer, max_length=self.plm_max_length, field="--plm"
            )
            self._detok = self._branch.detokenizer(
                self.model.token_list,
                self.token_type,
                self.token_hf_model,
                sym_space=self.model.sym_space,
                sym_blank=self.model.sym_blank,
            )
        return self._branch

    def z_l(self, utt: Utterance) -> Tuple[torch.Tensor, List[str]]:
        """Z_L (Lt, d_t) of the transcript from the PLM, and its token strings ([CLS] ... [SEP])."""
        branch = self.plm_branch()
        ids = self.text_ids(utt.utt_id, utt.text)
        text = self._detok(ids)
        z, lengths = branch.encode_texts([text], torch.device(self.device))
        tok_ids, _ = branch.tokenize([text])
        tokens = branch.tokenizer.convert_ids_to_tokens(tok_ids[0, : int(lengths[0])].tolist())
        return z[0, : int(lengths[0])].float(), list(tokens)


def feats_tokens(text: str, length: int) -> List[str]:
    """Token labels for precomputed Z_L: [CLS] + characters + [SEP] when the count fits, else positions."""
    chars = [c for c in text if not c.isspace()]
    if len(chars) + 2 == length:
        return ["[CLS]"] + chars + ["[SEP]"]
    return [str(j) for j in range(length)]


def compute_panel(
    lm: LoadedModel, utt: Utterance, method: str, z: torch.Tensor, tokens: List[str], eps: Optional[float]
) -> Panel:
    """Coupling of one model on one utterance with one method (the model's alignment_config, method replaced)."""
    import espnet_ot.ot as ot_core

    h = lm.h_a(utt.speech)
    if z.size(-1) != h.size(-1):
        raise ValueError(
            f"{lm.label}: Z_L has width {z.size(-1)} but H_A has {h.size(-1)}: use the PLM the model was trained with"
        )
    if not lm.include_special and z.size(0) > 2:
        z, tokens = z[1:-1], tokens[1:-1]
    cfg = lm.alignment_config.replace(method=method)
    if eps is not None:
        cfg = cfg.replace(eps=eps)
    h_mask = torch.ones(1, h.size(0), dtype=torch.bool, device=h.device)
    z_mask = torch.ones(1, z.size(0), dtype=torch.bool, device=h.device)
    with torch.no_grad():
        result = ot_core.ot_alignment(h[None], z[None].to(h.device), h_mask, z_mask, **cfg.solver_kwargs())
        gamma = result.coupling.float()
        diag = ot_core.coupling_diagnostics(gamma, h_mask, z_mask)
    extra = f", beta={cfg.beta}" if method == "tot" else ""
    if method == "gmot":
        extra = f", alpha={cfg.alpha}, {cfg.edges} edges"
    eps_used = cfg.eps
    title = f"{lm.label}: {METHOD_TITLES[method]}\neps={eps_used}{extra}"
    return Panel(title, gamma[0].cpu().numpy(), tokens, float(diag["band_mass"][0]), lm.frame_shift_s)


# ----------------------------------------------------------------------------------------- drawing
def display_tokens(tokens: Sequence[str], have_cjk_font: bool) -> List[str]:
    """Tick labels: the tokens, with non-ASCII ones spelled U+XXXX when no CJK font is installed."""
    if have_cjk_font:
        return list(tokens)
    return [t if all(ord(c) < 128 for c in t) else " ".join(f"U+{ord(c):04X}" for c in t) for t in tokens]


def draw(panels: Sequence[Panel], utt: Utterance, path: Path, dpi: int = 120) -> Path:
    """Side-by-side heat maps of gamma^T (tokens down, acoustic frames across), one colour bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = use_cjk_font("plot_coupling")
    n = len(panels)
    la, lt = panels[0].coupling.shape
    width = max(4.0, min(9.0, 2.0 + 0.09 * la))
    height = max(3.0, min(10.0, 1.6 + 0.28 * lt))
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        g = panel.coupling.T  # (Lt, La)
        im = ax.imshow(g, aspect="auto", origin="upper", cmap="viridis", interpolation="nearest")
        ax.set_title(f"{panel.title}\nband mass {panel.band_mass:.2f}", fontsize=9)
        shift = f" ({panel.frame_shift_s * 1000:.0f} ms)" if panel.frame_shift_s else ""
        ax.set_xlabel(f"acoustic frame i of H_A{shift}")
        ax.set_ylabel("PLM token j of Z_L")
        labels = display_tokens(panel.tokens, font is not None)
        step = max(1, int(np.ceil(len(labels) / 40)))
        ax.set_yticks(range(0, len(labels), step))
        ax.set_yticklabels(labels[::step], fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="coupling gamma_ij")
    note = "" if font is not None else "  (no CJK font installed: characters shown as code points)"
    fig.suptitle(f"{utt.utt_id}: {utt.text if font is not None else ''}{note}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- main
def plan_panels(models: List[LoadedModel], methods: Optional[Sequence[str]] = None) -> List[Tuple[LoadedModel, str]]:
    """(model, method) per panel: one model with each of methods (default all), or one method per model."""
    if len(models) == 1:
        return [(models[0], m) for m in (methods or METHODS)]
    if methods is not None and len(methods) != len(models):
        raise ValueError(f"--methods: give one method per model ({len(models)}), got {len(methods)}")
    plan = []
    for i, lm in enumerate(models):
        method = methods[i] if methods else lm.alignment
        if method not in METHOD_TITLES:
            raise ValueError(f"{lm.label}: model_conf.alignment is {method!r}; name its panel's method with --methods")
        plan.append((lm, method))
    return plan


def plot_couplings(
    asr_train_config: Sequence[Path],
    asr_model_file: Sequence[Path],
    output: Optional[Path] = None,
    output_dir: Optional[Path] = None,
    labels: Optional[Sequence[str]] = None,
    methods: Optional[Sequence[str]] = None,
    plm: Optional[str] = None,
    plm_feats: Optional[Path] = None,
    eps: Optional[float] = None,
    device: str = "cpu",
    dpi: int = 120,
    **utterances,
) -> List[Path]:
    """Write one PNG per utterance (``utterances``: the keyword arguments of :func:`utterance_items`).

    Each panel is one (model, method) of :func:`plan_panels`; Z_L comes from ``plm_feats`` (a feats.scp of
    ``python -m espnet_ot.bin.dump_plm_feats``) when given, else from the PLM (``plm``, default the model's).
    Returns the paths written.
    """
    if len(asr_train_config) != len(asr_model_file):
        raise ValueError(
            f"--asr_train_config has {len(asr_train_config)} entries but --asr_model_file has "
            f"{len(asr_model_file)}: give one model file per config"
        )
    if labels is not None and len(labels) != len(asr_train_config):
        raise ValueError("--labels: give one label per model")
    # everything that can be checked without the models first (loading them takes a while)
    check_outputs(output, output_dir)
    items = utterance_items(**utterances)
    if output is not None and len(items) != 1:
        raise ValueError(f"--output takes one utterance, got {len(items)}: use --output_dir")
    feats = None
    if plm_feats is not None:
        import kaldiio

        if not Path(plm_feats).is_file():
            raise FileNotFoundError(f"--plm_feats {plm_feats} does not exist")
        feats = kaldiio.load_scp(str(plm_feats))
    models = [
        LoadedModel(Path(c), Path(m), device, plm, lab)
        for c, m, lab in zip(asr_train_config, asr_model_file, labels or [None] * len(asr_train_config))
    ]
    plan = plan_panels(models, methods)
    utts = read_audio(models[0].fs, items)
    written = []
    for utt in utts:
        panels = []
        for lm, method in plan:
            if feats is not None:
                if utt.utt_id not in feats:
                    raise KeyError(f"--plm_feats {plm_feats} has no entry for {utt.utt_id}")
                z = torch.as_tensor(np.asarray(feats[utt.utt_id]), dtype=torch.float32)
                tokens = feats_tokens(utt.text, z.size(0))
            else:
                z, tokens = lm.z_l(utt)
            panels.append(compute_panel(lm, utt, method, z, tokens, eps))
        path = Path(output) if output is not None else Path(output_dir) / f"{utt.utt_id}.png"
        written.append(draw(panels, utt, path, dpi))
        print(f"plot_coupling: wrote {path}", flush=True)
    return written
