"""Backbones (``nets``: residual MLP, DDPM U-Net) and the denoiser wrapper on the theory's schedule
(``denoiser``: eps-prediction, the exact finite-set denoiser)."""
