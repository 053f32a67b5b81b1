"""Batched entropic optimal transport in pure PyTorch (no ESPnet imports): OT-BERT, TOT-CAKT and GM-OT solvers."""

from espnet_ot.ot.alignment import OTAlignment, coupling_diagnostics, fgw_cost, ot_alignment, transport_cost
from espnet_ot.ot.config import ALIGNMENTS, DEFAULT_METHOD, METHODS, NO_ALIGNMENT, AlignmentConfig
from espnet_ot.ot.cost import cosine_cost, temporal_distance, tot_cost
from espnet_ot.ot.gromov import fused_gromov_wasserstein, gw_constant, gw_tensor_product
from espnet_ot.ot.sinkhorn import sinkhorn, sinkhorn_unbalanced
from espnet_ot.ot.structure import (
    DenseStructure,
    FeatureStructure,
    MixedStructure,
    Structure,
    TemporalStructure,
    feature_structure,
    temporal_structure,
)

__all__ = [
    "ALIGNMENTS",
    "AlignmentConfig",
    "DEFAULT_METHOD",
    "METHODS",
    "NO_ALIGNMENT",
    "DenseStructure",
    "FeatureStructure",
    "MixedStructure",
    "OTAlignment",
    "Structure",
    "TemporalStructure",
    "cosine_cost",
    "coupling_diagnostics",
    "feature_structure",
    "fgw_cost",
    "fused_gromov_wasserstein",
    "gw_constant",
    "gw_tensor_product",
    "ot_alignment",
    "sinkhorn",
    "sinkhorn_unbalanced",
    "temporal_distance",
    "temporal_structure",
    "tot_cost",
    "transport_cost",
]
