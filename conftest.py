# Root conftest: makes the repo importable when pytest runs from a plain checkout, and keeps JAX on the CPU.
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
