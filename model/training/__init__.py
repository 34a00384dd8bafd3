"""What both stages share to train: the loop, checkpoints, EMA and Ray Train."""
