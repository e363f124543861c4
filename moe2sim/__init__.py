"""moe2sim: simulator and digital twin of MoE² (Mixture-of-Edge-Experts, arXiv 2501.09410)."""
__version__ = "0.1.0"
