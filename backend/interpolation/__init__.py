"""Latent-space interpolation: VAE encode/decode, slerp, and the frame schedule."""
