"""The package list of the distribution; everything else is in pyproject.toml.

Two folders of the repository install inside the amsim package through pyproject's package-dir
mapping (analysis/ as amsim.analysis, c_models/ as amsim.c_models). setuptools' declarative
package discovery cannot name a package that lives outside its parent's folder, so the list is
found here: every folder under amsim/ (new subpackages join without an edit; the C folders count
as namespace packages, as setuptools wants for package data) plus the two mapped ones.
"""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["amsim", "amsim.*"], exclude=["*.__pycache__"]),
                "amsim.analysis", "amsim.c_models"])
