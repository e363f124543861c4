"""The coarse level of MoE²: budgets, the subset-selection problem, its solvers and the selector."""
