"""diffusers: a ``UNet2DModel`` folder as a ``Denoiser``, diffusers' schedulers driven by any denoiser, and the
Gaussian late start in a diffusers sampling loop."""
