"""Shared test fixtures: small models (built by tests/helpers.py) loaded once per session.

Markers (registered in pyproject.toml, all run by plain `pytest` and `make test`): `slow` for tests that take
more than a few seconds, `realtime` for tests whose result depends on wall-clock timing (real-time feeding,
audio devices); deselect them on a loaded machine with `-m "not realtime"`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import identity_model_dir, tiny_model_dir


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", f_dim=8, seed=3)[0]


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from vc.model import load_model

    return load_model(tiny_dir, device="cpu", threads=1)


@pytest.fixture(scope="session")
def tiny6(tmp_path_factory):
    """Another tiny DSAE, f_dim 6: its codes cannot be confused with `tiny`'s."""
    from vc.model import load_model

    return load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny6") / "model", f_dim=6, seed=5)[0], device="cpu",
                      threads=1)


@pytest.fixture(scope="session")
def identity_model(tmp_path_factory):
    from vc.model import load_model

    return load_model(identity_model_dir(tmp_path_factory.mktemp("identity") / "model"), device="cpu", threads=1)
