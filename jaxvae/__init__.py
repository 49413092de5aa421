"""The jax backend: the twin of ``torchvae``, module for module. Its entry points are
``jaxvae.backend.BACKEND``'s; ``import jaxvae`` alone imports nothing."""
