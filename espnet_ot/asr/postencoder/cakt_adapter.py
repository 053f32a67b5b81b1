"""CAKT adapter postencoder: H_A = FC2(H_ca) for the OT branch and H_at = H_ca + s * LN(FC3(LN(H_A))) for CTC."""

from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from typeguard import typechecked


class CapturedHidden:
    """Holder filled by `CAKTAdapter.capture()` with the last H_A, H_at (the CTC's input) and lengths of the block."""

    def __init__(self) -> None:
        self.h_a: Optional[torch.Tensor] = None
        self.h_at: Optional[torch.Tensor] = None
        self.lengths: Optional[torch.Tensor] = None


class CAKTAdapter(AbsPostEncoder):
    """Adapter of TOT-CAKT (paper Eq. (2) and (22)) used as an ESPnet postencoder.

    The output H_at keeps the encoder width, so ESPnet's CTC layer (FC1) sits on it
    unchanged; H_A (the PLM-width projection used by the OT branch) is handed to the
    model through `capture()` so that no second encoder pass is needed.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        plm_dim: int = 768,
        scale: float = 1.0,
        dropout_rate: float = 0.0,
    ):
        """Build the adapter.

        Args:
            input_size: encoder output width d_a (passed by ESPnet).
            plm_dim: PLM hidden width d_t (768 for bert-base-chinese); must match the PLM.
            scale: s in Eq. (22), weight of the linguistic-projected feature.
            dropout_rate: dropout on LN(FC3(LN(H_A))) before the residual sum.
        """
        super().__init__()
        if plm_dim <= 0:
            raise ValueError(f"postencoder_conf.plm_dim must be positive, got {plm_dim}")
        self._input_size = input_size
        self.plm_dim = plm_dim
        self.scale = scale
        self.fc2 = torch.nn.Linear(input_size, plm_dim)
        self.norm_a = torch.nn.LayerNorm(plm_dim)
        self.fc3 = torch.nn.Linear(plm_dim, input_size)
        self.norm_hat = torch.nn.LayerNorm(input_size)
        self.dropout = torch.nn.Dropout(dropout_rate)
        self._capture: Optional[CapturedHidden] = None

    def output_size(self) -> int:
        """Width of H_at: the encoder width, so CTC's input size is unchanged."""
        return self._input_size

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Map H_ca (B, T, d_a) to H_at (B, T, d_a); lengths are unchanged."""
        h_a = self.fc2(input)
        h_hat = self.fc3(self.norm_a(h_a))
        h_at = input + self.scale * self.dropout(self.norm_hat(h_hat))
        if self._capture is not None:
            self._capture.h_a = h_a
            self._capture.h_at = h_at
            self._capture.lengths = input_lengths
        return h_at, input_lengths

    @contextmanager
    def capture(self) -> Iterator[CapturedHidden]:
        """Within the block, every forward stores its H_A (B, T, d_t) and lengths in the holder."""
        holder = CapturedHidden()
        previous, self._capture = self._capture, holder
        try:
            yield holder
        finally:
            self._capture = previous
