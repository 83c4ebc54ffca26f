"""Training a denoiser (EMA, clipping, bf16 on GPU, bit-exact resume, DDP) and its typed configuration."""
