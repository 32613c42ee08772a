"""timbreclip.neural: front end, audio encoder, frozen text encoders, the TimbreCLIP space, checkpoints."""
