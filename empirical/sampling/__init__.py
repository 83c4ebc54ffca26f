"""Few-step samplers (DDPM, DDIM, PNDM, iPNDM, DPM-Solver++ 2M/3M, UniPC) on their authors' time grids, and the
initial draws: vanilla, late, the Gaussian late start, teleportation."""
