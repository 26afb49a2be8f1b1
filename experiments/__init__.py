"""Ready-to-run experiment configs (``*.yaml``), shipped with the package.

This file makes the folder a package so the configs travel as package data: after a plain ``pip install .``
``discover search`` finds ``quickstart.yaml`` (and ``discover search talpo_tiny`` finds ``talpo_tiny.yaml``)
from any directory; see :mod:`discover.infra.experiments`. There is no Python code here.
"""
