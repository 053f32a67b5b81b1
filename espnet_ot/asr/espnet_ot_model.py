"""OT-CTC ASR model `espnet_ot`: pure CTC plus OT / TOT / GM-OT knowledge transfer from a frozen PLM.

Loss (paper Eq. (24), plus our distillation term): L = lambda * L_ctc + (1 - lambda) * (w * (L_align + L_ot)
+ w_d * L_distill), where L_ot is the transport cost between the adapter's H_A and the PLM's Z_L,
L_align = sum_j 1 - cos(Z_tilde_j, Z_L_j) with Z_tilde = gamma^T H_A (Eq. (20)-(21)), and L_distill =
sum_j KL(p_PLM(. | y without y_j) || q_j), q_j the CTC posteriors pooled through gamma's column j
(espnet_ot.asr.distill; w_d = model_conf.distill_weight, 0 by default: the papers' model).
Per-utterance terms are summed over the batch and divided by the batch size, like ESPnet's
CTC loss; utterances with an empty transcript (Z_L = [CLS][SEP]) contribute zero.

With ``alignment: none`` the model is exactly ESPnetASRModel in CTC mode (loss = L_ctc).
At inference only encoder -> adapter -> CTC runs: no PLM, no OT.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

import espnet_ot.ot as ot_core
from espnet_ot.asr.distill import distill_kl
from espnet_ot.asr.model_config import checked_model_conf
from espnet_ot.asr.plm import PLM_FEATS_KEY, PLMTextBranch, TokenDetokenizer
from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter
from espnet_ot.asr.soft_labels import SOFT_LABELS_KEY, split_soft_labels
from espnet_ot.ot.config import (
    ALIGNMENTS,
    DEFAULT_METHOD,
    NO_ALIGNMENT,
    AlignmentConfig,
)

__all__ = ["ALIGNMENTS", "ESPnetOTModel", "PLM_FEATS_KEY", "SOFT_LABELS_KEY", "lengths_to_mask"]
N_SPECIAL = 2  # [CLS] and [SEP] wrap every Z_L


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool mask (B, max_len), True at real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ESPnetOTModel(ESPnetASRModel):
    """CTC model whose adapter output H_A is aligned to frozen-PLM features Z_L by optimal transport."""

    @checked_model_conf  # model_conf checked and its numbers converted (espnet_ot/asr/model_config.py)
    @typechecked
    def __init__(
        self,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: Optional[AbsEncoder],
        postencoder: Optional[AbsPostEncoder],
        decoder: Optional[AbsDecoder],
        ctc: CTC,
        joint_network: Optional[torch.nn.Module],
        alignment: str = DEFAULT_METHOD,
        alignment_conf: Optional[Dict[str, Any]] = None,
        ctc_lambda: float = 0.3,
        ot_weight: float = 1.0,
        distill_weight: float = 0.0,
        plm: Optional[str] = None,
        plm_layer: int = -1,
        plm_max_length: Optional[int] = None,
        token_type: str = "char",
        token_hf_model: Optional[str] = None,
        align_exclude_special: bool = True,
        ot_include_special: bool = True,
        ot_in_eval: bool = True,
        band: float = 0.1,
        ctc_weight: float = 1.0,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        **kwargs,
    ):
        """Build the model (never loads the PLM).

        Args:
            alignment: ot (OT-BERT) | tot (TOT-CAKT) | gmot (GM-OT) | none (plain CTC baseline).
            alignment_conf: options of espnet_ot.ot.ot_alignment used by the chosen method
                (eps, beta, alpha, edges, edge_mix, grad, max_iter, tol, gw_max_iter, gw_tol),
                checked now by espnet_ot.ot.AlignmentConfig (exposed as `alignment_config`).
            ctc_lambda: lambda in Eq. (24) (paper: 0.3).
            ot_weight: w in Eq. (24) (paper: 1.0).
            distill_weight: w_d, weight of the OT-aligned distillation of the PLM's masked-LM soft labels
                (data key `plm_soft_labels`, dump_plm_feats --kind mlm_soft_labels); 0: the papers' model.
            plm: Hugging Face name or local directory of the frozen PLM; only needed while
                training without precomputed `plm_feats`.
            plm_layer: PLM hidden state used as Z_L (-1: last).
            plm_max_length: cap on PLM positions (default: the PLM's own maximum).
            token_type: type of the CTC token list: char | bpe | word | hugging_face.
            token_hf_model: tokenizer joining hugging_face CTC tokens (default: the PLM's).
            align_exclude_special: leave [CLS]/[SEP] out of L_align (Eq. (21)).
            ot_include_special: keep [CLS]/[SEP] as nodes of the coupling.
            ot_in_eval: also compute the OT branch in validation (for comparable valid loss).
            band: relative half-width of the diagonal band for the band_mass statistic.
            ctc_weight: must be 1.0 (pure CTC).
        """
        # model_conf (every value here) was checked by @checked_model_conf: ranges, alignment, alignment_conf
        alignment_config = None if alignment == NO_ALIGNMENT else AlignmentConfig.from_conf(alignment, alignment_conf)
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=decoder,
            ctc=ctc,
            joint_network=joint_network,
            ctc_weight=ctc_weight,
            sym_space=sym_space,
            sym_blank=sym_blank,
            **kwargs,
        )
        self.alignment = alignment
        self.use_ot = alignment != NO_ALIGNMENT
        self.alignment_config: Optional[AlignmentConfig] = alignment_config
        if self.use_ot:
            if not isinstance(postencoder, CAKTAdapter):
                raise ValueError(
                    f"model_conf.alignment={alignment!r} needs the adapter: set "
                    "`postencoder: cakt_adapter` (with postencoder_conf.plm_dim = PLM width)"
                )
        self.ctc_lambda = ctc_lambda
        self.ot_weight = ot_weight
        self.distill_weight = distill_weight
        self.token_type = token_type
        self.token_hf_model = token_hf_model
        self.sym_space = sym_space
        self.sym_blank = sym_blank
        self.align_exclude_special = align_exclude_special
        self.ot_include_special = ot_include_special
        self.ot_in_eval = ot_in_eval
        self.band = band
        # Plain attributes (not nn.Module children): never in state_dict(), loaded on first use.
        self._plm = PLMTextBranch(plm, layer=plm_layer, max_length=plm_max_length) if plm is not None else None
        self._detokenizer: Optional[TokenDetokenizer] = None

    @property
    def plm_branch(self) -> Optional[PLMTextBranch]:
        """The frozen PLM branch (None when model_conf.plm is unset); not a submodule."""
        return self._plm

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """CTC loss of ESPnetASRModel plus the OT branch; `plm_feats(_lengths)` may carry Z_L."""
        plm_feats = kwargs.pop(PLM_FEATS_KEY, None)
        plm_feats_lengths = kwargs.pop(PLM_FEATS_KEY + "_lengths", None)
        soft_labels = kwargs.pop(SOFT_LABELS_KEY, None)
        kwargs.pop(SOFT_LABELS_KEY + "_lengths", None)
        if not self.use_ot or (not self.training and not self.ot_in_eval):
            return super().forward(speech, speech_lengths, text, text_lengths, **kwargs)

        batch_size = speech.shape[0]
        if plm_feats is None:
            # Read the ids before the base class edits `text` in place.
            lens = text_lengths.tolist()
            text_ids = [row[:n] for row, n in zip(text.tolist(), lens)]
        with self.postencoder.capture() as captured:
            loss_ctc, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        h_a, h_lens = captured.h_a, captured.lengths
        if plm_feats is None:
            z, z_lens = self._plm_features(text_ids, h_a.device)
        else:
            if plm_feats_lengths is None:
                raise ValueError("plm_feats given without plm_feats_lengths")
            z, z_lens = plm_feats.to(h_a.device).float(), plm_feats_lengths.to(h_a.device)
        if z.size(-1) != h_a.size(-1):
            raise ValueError(
                f"PLM features have width {z.size(-1)} but postencoder_conf.plm_dim is "
                f"{h_a.size(-1)}: set plm_dim to the PLM's hidden size"
            )
        distill = None
        if self.distill_weight > 0.0:
            if soft_labels is None:
                raise ValueError(
                    f"model_conf.distill_weight={self.distill_weight} needs the soft labels as the data key "
                    f"{SOFT_LABELS_KEY} (python -m espnet_ot.bin.dump_plm_feats --kind mlm_soft_labels, then "
                    f"--train/valid_data_path_and_name_and_type <dump>/feats.scp,{SOFT_LABELS_KEY},kaldi_ark)"
                )
            distill = (captured.h_at, soft_labels)
        loss_ot, loss_align, diag, loss_distill = self._ot_branch(h_a, h_lens, z, z_lens, batch_size, distill)
        loss = self.ctc_lambda * loss_ctc + (1.0 - self.ctc_lambda) * (
            self.ot_weight * (loss_align + loss_ot) + self.distill_weight * loss_distill
        )
        stats["loss"] = loss.detach()
        stats["loss_ot"] = loss_ot.detach()
        stats["loss_align"] = loss_align.detach()
        if distill is not None:
            stats["loss_distill"] = loss_distill.detach()
        stats.update(diag)
        loss, stats, weight = force_gatherable((loss, stats, weight), loss.device)
        return loss, stats, weight

    def _plm_features(self, text_ids: List[List[int]], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen PLM on the transcripts (loads it on first call)."""
        if self._plm is None:
            raise ValueError(
                "model_conf.plm is not set and the batch has no plm_feats: set model_conf.plm "
                "to a Hugging Face name or local PLM directory, or pass precomputed features "
                "(python -m espnet_ot.bin.dump_plm_feats) as the plm_feats data key"
            )
        if self._detokenizer is None:
            self._detokenizer = self._plm.detokenizer(
                self.token_list,
                self.token_type,
                self.token_hf_model,
                sym_space=self.sym_space,
                sym_blank=self.sym_blank,
            )
        return self._plm.encode_ids(self._detokenizer, text_ids, device)

    def _ot_branch(
        self,
        h_a: torch.Tensor,
        h_lens: torch.Tensor,
        z: torch.Tensor,
        z_lens: torch.Tensor,
        batch_size: int,
        distill: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Optional[torch.Tensor]], torch.Tensor]:
        """(L_ot, L_align) summed over utterances / batch size, coupling diagnostics and L_distill (0 without).

        distill: (H_at, soft labels (B, L_t, 2k)) when model_conf.distill_weight > 0.
        """
        valid = z_lens > N_SPECIAL
        if not self.ot_include_special:
            z, z_lens = z[:, 1:], z_lens - N_SPECIAL
        # one host synchronisation for the sizes: valid utterances, longest token and frame sequences among them
        n_valid, z_max, h_max = torch.stack(
            [valid.sum(), torch.where(valid, z_lens, 0).max(), torch.where(valid, h_lens, 0).max()]
        ).tolist()
        zero = h_a.new_zeros(()).float()
        if n_valid == 0:
            none = dict.fromkeys(
                ("band_mass", "coupling_entropy", "coupling_entropy_rel", "ot_marginal_err", "ot_iters")
                + (("pool_peak", "pool_span") if distill is not None else ())
            )
            return zero, zero, none, zero
        if n_valid < valid.numel():
            idx = valid.nonzero(as_tuple=True)[0]
            h_a, h_lens, z, z_lens = h_a[idx], h_lens[idx], z[idx], z_lens[idx]
            if distill is not None:
                distill = (distill[0][idx], distill[1][idx.to(distill[1].device)])
        z = z[:, :z_max]
        h_a = h_a[:, :h_max]
        h_mask = lengths_to_mask(h_lens, h_a.size(1))
        z_mask = lengths_to_mask(z_lens, z.size(1))

        # The OT branch computes in float32 even inside an autocast region (use_amp): bf16/fp16 would move
        # the coupling and fake convergence. The solver does the same internally; this covers the projection.
        with torch.autocast(device_type=h_a.device.type, enabled=False):
            result = ot_core.ot_alignment(h_a, z, h_mask, z_mask, **self.alignment_config.solver_kwargs())
            gamma = result.coupling.float()
            # Barycentric projection Z_tilde = gamma^T H_A (Eq. (20)); scale is irrelevant for cosine.
            z_tilde = torch.bmm(gamma.transpose(1, 2), h_a.float())
            cos = torch.nn.functional.cosine_similarity(z_tilde, z.float(), dim=-1, eps=1e-8)
            align_mask = z_mask
            if self.align_exclude_special and self.ot_include_special:
                pos = torch.arange(z.size(1), device=z.device)[None, :]
                align_mask = z_mask & (pos > 0) & (pos < (z_lens - 1)[:, None])
            loss_align = ((1.0 - cos) * align_mask).sum() / batch_size
            loss_ot = result.loss.float().sum() / batch_size
            loss_distill, pool = zero, {}
            if distill is not None:
                loss_distill, pool = self._distill(gamma, distill[0][:, :h_max], distill[1], h_mask, batch_size)

        with torch.no_grad():
            diag = ot_core.coupling_diagnostics(gamma.detach(), h_mask, z_mask, band=self.band)
        stats = {
            "band_mass": diag["band_mass"].float().mean(),
            "coupling_entropy": diag["entropy"].float().mean(),
            # 1 = uniform coupling (no alignment); about 0.5 = a one-to-one matching
            "coupling_entropy_rel": diag["entropy_rel"].float().mean(),
            # solver convergence: the batch's worst L1 marginal error and the most iterations used
            "ot_marginal_err": result.marginal_err.detach().float().max(),
            "ot_iters": result.n_iter.detach().float().max(),
            **pool,
        }
        return loss_ot, loss_align, stats, loss_distill

    def _distill(
        self,
        gamma: torch.Tensor,
        h_at: torch.Tensor,
        soft_labels: torch.Tensor,
        h_mask: torch.Tensor,
        batch_size: int,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """L_distill summed over utterances / batch size, and the pooling statistics.

        soft_labels' rows follow Z_L's ([CLS] y [SEP]), so they are cut like Z_L to the coupling's columns.
        """
        n_cols = gamma.size(2)
        labels = soft_labels.to(gamma.device).float()
        if not self.ot_include_special:
            labels = labels[:, 1:]
        labels = labels[:, :n_cols]
        if labels.size(1) < n_cols:
            labels = torch.nn.functional.pad(labels, (0, 0, 0, n_cols - labels.size(1)))
        ids, probs = split_soft_labels(labels)
        log_probs = self.ctc.log_softmax(h_at.float())
        kl, pool = distill_kl(gamma, log_probs, ids, probs, self.blank_id, h_mask)
        return kl.sum() / batch_size, pool
