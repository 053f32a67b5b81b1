"""A conformer-CTC's parts (encoder, CTC, cakt_adapter) as keyword arguments of ESPnetASRModel / ESPnetOTModel."""

from typing import Any, Dict, Mapping, Optional, Sequence

import torch


def conformer_ctc_kwargs(
    token_list: Sequence[str],
    input_size: int,
    encoder_conf: Mapping[str, Any],
    plm_dim: Optional[int] = None,
    frontend: Optional[torch.nn.Module] = None,
    seed: Optional[int] = None,
) -> Dict[str, Any]:
    """Constructor keyword arguments of a CTC-only model on a conformer encoder.

    ``ConformerEncoder(input_size, **encoder_conf)``, a CTC over ``token_list`` and, when ``plm_dim`` is given,
    the cakt_adapter postencoder (TOT-CAKT Eq. 2 and 22) between them; no decoder, specaug or normalize. With
    ``seed``, ``torch.manual_seed(seed)`` runs first, so the parameters are drawn in a fixed order (encoder,
    adapter, CTC). The benchmarks and the tests build their models with it.
    """
    from espnet2.asr.ctc import CTC
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter

    if seed is not None:
        torch.manual_seed(seed)
    encoder = ConformerEncoder(input_size=input_size, **encoder_conf)
    d_model = encoder.output_size()
    postencoder = CAKTAdapter(input_size=d_model, plm_dim=plm_dim) if plm_dim else None
    return dict(
        vocab_size=len(token_list),
        token_list=list(token_list),
        frontend=frontend,
        specaug=None,
        normalize=None,
        preencoder=None,
        encoder=encoder,
        postencoder=postencoder,
        decoder=None,
        ctc=CTC(odim=len(token_list), encoder_output_size=d_model),
        joint_network=None,
    )
