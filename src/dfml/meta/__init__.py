"""Meta-learning: functional adaptation, losses, MAML on real data, BiDf-MKD distillation."""
