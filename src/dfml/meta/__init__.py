"""Meta-learning: functional adaptation, the outer loop, MAML on real data and BiDf-MKD distillation."""
