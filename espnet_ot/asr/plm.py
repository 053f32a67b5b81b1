"""Frozen pretrained-LM text branch: CTC token ids -> text -> [CLS] y [SEP] -> Z_L, loaded lazily, never saved.

Rules (documented here, tested in tests/asr/test_plm.py):

* Token ids to text. ``char`` and ``bpe`` share one rule: the tokens are concatenated,
  ``<space>`` and the sentencepiece marker ``▁`` become a space, ``<blank>``, ``<sos/eos>``
  and padding are dropped, ``<unk>`` becomes the PLM tokenizer's unknown token, and runs of
  spaces collapse to one. ``word`` joins the tokens with spaces. ``hugging_face`` hands the
  tokens to a Hugging Face tokenizer's ``convert_tokens_to_string`` (the PLM's own tokenizer
  unless ``token_hf_model`` names another one).
* Long transcripts. The PLM input is truncated to the PLM's maximum positions (the smaller of
  ``max_position_embeddings`` and the tokenizer's ``model_max_length``, or ``plm_max_length``):
  the tail of the transcript is cut and [CLS] ... [SEP] are kept, so Z_L always starts with
  [CLS] and ends with [SEP]. CTC still sees the whole transcript. A warning is logged once.
* Empty transcripts give Z_L = [CLS][SEP] (two rows); the model gives such an utterance zero
  OT and alignment weight (see ESPnetOTModel).
* Where the PLM comes from. A name that exists as a directory, or looks like a path (``./``,
  ``/``, ``~``, two slashes, a first component that is an existing directory, characters a hub id
  never has) is a local directory and must hold the tokenizer files; anything else is a Hugging
  Face hub name (with ``HF_HUB_OFFLINE=1`` only the local cache is tried, and a miss fails at once).
  The tokenizer must belong to the model (its size fits the embedding table and fills at least half
  of it): a stand-in tokenizer would silently turn every character into [UNK].

The branch is a plain Python object (not an ``nn.Module`` attribute), so the PLM never shows
up in ``state_dict()``, checkpoints, ``.parameters()`` or DDP, and it is loaded on first use.
"""

import logging
import os
from typing import Any, List, Optional, Sequence, Tuple

import torch

from espnet_ot.asr.plm_config import (
    PLM_FIELD,
    TOKENIZER_FILES,
    check_plm_config,
    check_plm_options,
    hub_offline,
    is_local_plm,
    plm_not_found,
)

PLM_FEATS_KEY = "plm_feats"  # data name of precomputed Z_L (python -m espnet_ot.bin.dump_plm_feats)
SUPPORTED_TOKEN_TYPES = ("char", "bpe", "word", "hugging_face")
_DROPPED_TOKENS = frozenset({"<blank>", "<sos/eos>", "<sos>", "<eos>", "<pad>"})
_SP_SPACE = "\u2581"  # sentencepiece word-boundary marker


def _plm_positions(model, tokenizer) -> Optional[int]:
    """The most input positions the PLM takes: its position embeddings, or its tokenizer's limit if smaller."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max is not None and tok_max < 1_000_000:
        limits.append(tok_max)
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else None


class TokenDetokenizer:
    """Turns ESPnet CTC token ids back into a text string for the PLM tokenizer."""

    def __init__(
        self,
        token_list: Sequence[str],
        token_type: str = "char",
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        sym_unk: str = "<unk>",
        unk_text: str = "[UNK]",
        hf_tokenizer: Optional[Any] = None,
    ):
        """Build the rule.

        Args:
            token_list: ESPnet token list (id -> token).
            token_type: char | bpe | word | hugging_face (model_conf.token_type).
            sym_space, sym_blank, sym_unk: ESPnet's special token spellings.
            unk_text: what <unk> becomes (the PLM tokenizer's unknown token).
            hf_tokenizer: tokenizer whose convert_tokens_to_string joins hugging_face tokens.
        """
        if token_type not in SUPPORTED_TOKEN_TYPES:
            raise ValueError(
                f"model_conf.token_type={token_type!r} is not supported by the PLM branch: "
                f"use one of {SUPPORTED_TOKEN_TYPES} (the token_type of the CTC token list)"
            )
        if token_type == "hugging_face" and hf_tokenizer is None:
            raise ValueError("token_type hugging_face needs a Hugging Face tokenizer")
        self.token_list = list(token_list)
        self.token_type = token_type
        self.sym_space = sym_space
        self.sym_unk = sym_unk
        self.unk_text = unk_text
        self.hf_tokenizer = hf_tokenizer
        self.dropped = set(_DROPPED_TOKENS) | {sym_blank}

    def __call__(self, ids: Sequence[int]) -> str:
        """Text of one utterance; ids outside the token list (padding -1) are ignored."""
        n = len(self.token_list)
        tokens = [self.token_list[i] for i in ids if 0 <= i < n]
        tokens = [t for t in tokens if t not in self.dropped]
        if self.token_type == "hugging_face":
            special = set(getattr(self.hf_tokenizer, "all_special_tokens", ()))
            tokens = [t for t in tokens if t not in special or t == self.unk_text]
            text = self.hf_tokenizer.convert_tokens_to_string(tokens)
        else:
            tokens = [self.unk_text if t == self.sym_unk else t for t in tokens]
            if self.token_type == "word":
                text = " ".join(tokens)
            else:
                text = "".join(" " if t == self.sym_space else t for t in tokens)
                text = text.replace(_SP_SPACE, " ")
        return " ".join(text.split())


class PLMTextBranch:
    """Frozen PLM (AutoTokenizer + AutoModel) producing Z_L = PLM([CLS] y [SEP]); loads on first use."""

    def __init__(
        self,
        name_or_path: str,
        layer: int = -1,
        max_length: Optional[int] = None,
        field: str = PLM_FIELD,
    ):
        """Describe the PLM without loading it.

        Args:
            name_or_path: Hugging Face model name or local directory.
            layer: hidden state used as Z_L (-1: last layer; 0: embeddings; i: layer i).
            max_length: cap on PLM input positions (default: the PLM's maximum).
            field: configuration field named in error messages (its siblings name plm_layer, plm_max_length).
        """
        check_plm_options(layer, max_length, field)
        self.name_or_path = name_or_path
        self.layer = layer
        self.max_length_override = max_length
        self.field = field
        self._tokenizer = None
        self._model = None
        self._warned_truncation = False
        self._special_ok = False

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer and model are in memory."""
        return self._model is not None

    def load(self) -> "PLMTextBranch":
        """Load tokenizer and model (frozen, eval); raises PLMNotFoundError with a one-line remedy."""
        if self.loaded:
            return self
        name = self.name_or_path
        path = os.path.expanduser(name)
        local = is_local_plm(name)
        if local and not os.path.isdir(path):
            raise plm_not_found(name, self.field, f"no such directory (relative to {os.getcwd()})")
        if local:
            self._check_tokenizer_files(path)
        from transformers import AutoModel, AutoTokenizer

        kwargs = dict(local_files_only=True) if local or hub_offline() else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            model = AutoModel.from_pretrained(path, **kwargs)
        except (OSError, ValueError, ImportError) as e:
            reason = f"{type(e).__name__}: {e}"
            if not local and hub_offline():
                reason = (
                    "HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache: download it where there is "
                    f"network (huggingface-cli download {name}) or unset HF_HUB_OFFLINE"
                )
            raise plm_not_found(name, self.field, reason) from None
        self._check_tokenizer_matches(tokenizer, model)
        positions = _plm_positions(model, tokenizer)
        check_plm_config(
            dict(model.config.to_dict(), max_position_embeddings=positions),
            name,
            self.layer,
            self.max_length_override,
            field=self.field,
        )
        model.eval()
        model.requires_grad_(False)
        self._tokenizer, self._model = tokenizer, model
        logging.info(f"Loaded frozen PLM {name!r} (hidden size {self.hidden_size})")
        return self

    def masked_lm(self) -> torch.nn.Module:
        """The PLM with its masked-LM head (frozen, eval), for soft labels; loaded on every call, not kept."""
        self.load()
        from transformers import AutoModelForMaskedLM

        path = os.path.expanduser(self.name_or_path)
        kwargs = dict(local_files_only=True) if is_local_plm(self.name_or_path) or hub_offline() else {}
        try:
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, **kwargs)
        except (OSError, ValueError) as e:
            raise plm_not_found(self.name_or_path, self.field, f"no masked-LM head ({type(e).__name__}: {e})")
        if info.get("missing_keys"):
            raise ValueError(
                f"{self.field}={self.name_or_path!r}: the checkpoint has no trained masked-LM head (missing "
                f"{sorted(info['missing_keys'])[0]}, ...), so its predictions would be random; use a PLM saved "
                "with its head (e.g. BertForMaskedLM.save_pretrained, as bert-base-chinese is)"
            )
        mlm.eval()
        mlm.requires_grad_(False)
        return mlm.to(next(self.model.parameters()).device)

    def _check_tokenizer_files(self, path: str) -> None:
        """A local PLM directory must hold its tokenizer (else transformers builds one that maps all to [UNK])."""
        if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
            raise ValueError(
                f"{self.field}={self.name_or_path!r}: the directory has no tokenizer file "
                f"({', '.join(TOKENIZER_FILES)}), so every character would become [UNK]; save the PLM's "
                f"tokenizer there too (AutoTokenizer.from_pretrained(SOURCE).save_pretrained({path!r}))"
            )

    def _check_tokenizer_matches(self, tokenizer, model) -> None:
        """The tokenizer must belong to the model: its vocabulary fits the embedding and fills most of it."""
        n_tok = len(tokenizer)
        n_model = int(model.get_input_embeddings().num_embeddings)
        if n_tok > n_model or 2 * n_tok < n_model:
            raise ValueError(
                f"{self.field}={self.name_or_path!r}: the tokenizer has {n_tok} tokens but the model's "
                f"vocabulary has {n_model}: the tokenizer does not belong to this model; save the model's own "
                "tokenizer into the same directory (tokenizer.save_pretrained)"
            )

    @property
    def tokenizer(self):
        """The PLM tokenizer (loads the PLM)."""
        return self.load()._tokenizer

    @property
    def model(self):
        """The frozen PLM (loads it)."""
        return self.load()._model

    @property
    def hidden_size(self) -> int:
        """d_t, the width of Z_L."""
        return int(self.model.config.hidden_size)

    @property
    def max_length(self) -> int:
        """Maximum PLM input length in tokens, [CLS] and [SEP] included."""
        if self.max_length_override is not None:
            return int(self.max_length_override)
        positions = _plm_positions(self.model, self.tokenizer)
        return 512 if positions is None else positions

    @property
    def unk_text(self) -> str:
        """Spelling of the PLM tokenizer's unknown token."""
        return self.tokenizer.unk_token or "[UNK]"

    def detokenizer(
        self,
        token_list: Sequence[str],
        token_type: str = "char",
        hf_tokenizer_name: Optional[str] = None,
        **symbols: str,
    ) -> TokenDetokenizer:
        """The ids -> text rule bound to this PLM's unknown token (loads the PLM tokenizer)."""
        hf_tok = None
        if token_type == "hugging_face":
            if hf_tokenizer_name is None:
                hf_tok = self.tokenizer
            else:
                from transformers import AutoTokenizer

                try:
                    hf_tok = AutoTokenizer.from_pretrained(hf_tokenizer_name)
                except (OSError, ValueError) as e:
                    raise plm_not_found(hf_tokenizer_name, "model_conf.token_hf_model", e)
        return TokenDetokenizer(token_list, token_type, unk_text=self.unk_text, hf_tokenizer=hf_tok, **symbols)

    def tokenize(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """[CLS] y [SEP] ids (B, Lt) and lengths (B,), truncated to max_length keeping [CLS]/[SEP]."""
        tok = self.tokenizer
        max_len = self.max_length
        if not texts:
            return torch.zeros((0, 0), dtype=torch.long), torch.zeros(0, dtype=torch.long)
        if tok.pad_token_id is None:
            raise ValueError(f"{self.field}={self.name_or_path!r}: its tokenizer has no padding token")
        encoded = tok(
            list(texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt", verbose=False
        )
        ids = encoded["input_ids"].long()
        lengths = encoded["attention_mask"].sum(1).long()
        self._check_special(ids[0, : int(lengths[0])].tolist())
        full = [t for t, n in zip(texts, lengths.tolist()) if n == max_len]  # only these can have been cut
        truncated = sum(len(x) > max_len for x in tok(full, verbose=False)["input_ids"]) if full else 0
        if truncated and not self._warned_truncation:
            self._warned_truncation = True
            logging.warning(
                f"{truncated} transcript(s) exceed the PLM's {max_len} positions: their tail is "
                "cut and [CLS]/[SEP] are kept (warned once)"
            )
        return ids, lengths

    def _check_special(self, example: Optional[List[int]]) -> None:
        """The rules above assume the tokenizer wraps inputs as [CLS] y [SEP]."""
        if example is None or self._special_ok:
            return
        special = set(self.tokenizer.all_special_ids)
        if len(example) < 2 or example[0] not in special or example[-1] not in special:
            raise ValueError(
                f"{self.field}={self.name_or_path!r}: its tokenizer does not wrap inputs as "
                "[CLS] y [SEP]; use a BERT-style PLM (encoder with CLS/SEP special tokens)"
            )
        self._special_ok = True

    @torch.no_grad()
    def _ids(self, texts: Sequence[str], device: Optional[torch.device]):
        """Token ids, lengths and the padding mask of texts, on the model's device (moved to `device` if given)."""
        model = self.model
        if device is not None and next(model.parameters()).device != torch.device(device):
            model.to(device)
        device = next(model.parameters()).device
        ids, lengths = self.tokenize(texts)
        ids, lengths = ids.to(device), lengths.to(device)
        mask = torch.arange(ids.size(1), device=device)[None, :] < lengths[:, None]
        return ids, lengths, mask

    def _states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The configured layer's hidden states (B, L, d_t) for token ids with a padding mask."""
        if self.layer == -1:
            return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states[
            self.layer
        ]

    def encode_texts(
        self, texts: Sequence[str], device: Optional[torch.device] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Z_L (B, Lt, d_t) float32 with zeros at padding, and lengths (B,) on `device`."""
        ids, lengths, mask = self._ids(texts, device)
        return self._states(ids, mask).float() * mask[..., None], lengths

    def encode_texts_masked(
        self, texts: Sequence[str], device: Optional[torch.device] = None, chunk: int = 256
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`encode_texts`, but token j's vector is the PLM's state at j with token j replaced by [MASK].

        Z_L of an unmasked token mostly encodes the token itself (what the CTC labels already say); the masked
        state is the PLM's expectation of position j from its context alone (an extension of ours, not in the
        papers). [CLS] and [SEP] keep their unmasked states. One PLM pass per token, ``chunk`` sequences at once.
        """
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise ValueError(f"{self.field}: the PLM's tokenizer has no [MASK] token; masked Z_L needs one")
        ids, lengths, mask = self._ids(texts, device)
        z = self._states(ids, mask).float() * mask[..., None]
        rows = [(b, j) for b in range(ids.size(0)) for j in range(1, int(lengths[b]) - 1)]
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            b_idx = torch.tensor([b for b, _ in part], device=z.device)
            j_idx = torch.tensor([j for _, j in part], device=z.device)
            n = torch.arange(len(part), device=z.device)
            masked = ids[b_idx].clone()
            masked[n, j_idx] = mask_id
            z[b_idx, j_idx] = self._states(masked, mask[b_idx])[n, j_idx].float()
        return z, lengths

    def encode_ids(
        self,
        detokenizer: TokenDetokenizer,
        ids: Sequence[Sequence[int]],
        device: Optional[torch.device] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Z_L for CTC token id sequences (the path shared by the model and dump_plm_feats)."""
        return self.encode_texts([detokenizer(list(map(int, x))) for x in ids], device)
