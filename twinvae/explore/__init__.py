"""The latent explorer: a local web app over a ``twinvae.Model`` (``twinvae-explore``, ``explore.py``).

``Explorer`` (``explorer.py``) computes, ``build_app`` (``app.py``) serves its JSON API under ``/api/``
and the static page in ``static/`` that uses it, ``cli.py`` is the command. Starlette and uvicorn are
imported only here (the ``explore`` extra)."""
