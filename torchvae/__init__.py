"""The torch backend: the twin of ``jaxvae``, module for module. Its entry points are
``torchvae.backend.BACKEND``'s; ``import torchvae`` alone imports nothing."""
