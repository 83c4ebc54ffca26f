"""Train (or load) a denoiser, predict the critical time of its training images, measure the breaking time."""
