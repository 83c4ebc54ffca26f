"""Few-step samplers with and without the Gaussian late start: sweeps of t_start, tables, chosen cells, the
cross-check against diffusers' schedulers."""
