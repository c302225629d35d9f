"""Package discovery only; everything else is in pyproject.toml.

converters/ sits at the top of the tree (the desktop half) but installs as edgekit.converters, so it
never claims a generic top-level name in site-packages. pyproject's `packages.find` cannot rename a
discovered tree, and a hand-written package list silently dropped three subpackages from the
round-1 wheel, so the list is computed here from the folders themselves.
"""
from setuptools import find_packages, setup

DEVICE = find_packages(include=["edgekit", "edgekit.*"])
DESKTOP = ["edgekit.converters"] + [f"edgekit.converters.{name}" for name in find_packages("converters")]

setup(packages=DEVICE + DESKTOP, package_dir={"edgekit.converters": "converters"})
