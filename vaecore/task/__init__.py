"""The tasks: the registry (``tasks``: a TaskSpec per task), each task's training object
(``image_task``, ``text_task``), what reports say of them (``task_reports``), the text task's
outputs and decoding (``text_outputs``, ``decoding``).

Imports only the foundation modules, vaecore.settings, vaecore.data, vaecore.runs and
vaecore.scoring; nothing here imports jax, torch or a backend package."""
