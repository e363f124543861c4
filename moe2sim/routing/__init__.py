"""The fine level of MoE²: the gating network, routers over the experts, top-k within a subset,
and aggregation of the k answers."""
