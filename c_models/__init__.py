"""The built-in multiplier models, one C file each; installed as ``amsim.c_models``.

This file only makes the folder a package, so that the models travel inside an installed amsim
and :func:`amsim.models.builtin_models_dir` can find them through importlib.resources.
"""
