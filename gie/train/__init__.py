"""Node representation pre-training (DGL): single process, DDP, and DGL distributed."""
