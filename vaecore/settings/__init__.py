"""Options and config: the option declarations (``declare``, ``flags``), the parser (``cli``), the
config dataclasses (``config``, ``text_config``), the MMD's arguments and what each objective needs
(``objectives``).

Imports only the foundation modules (vaecore.files, rng, posterior, schedules, pinning) and this
package; nothing here imports jax, torch or a backend package."""
