"""timbreclip.training: rendered patch libraries, datasets, labels, augmentation, the trainer and evaluation."""
