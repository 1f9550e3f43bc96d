"""
pytest only: run each test session inside a temporary folder, as trial does
with _trial_temp, so files made by TestCase.mktemp() never land in the
checkout.
"""

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _temporary_working_directory():
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="twisted-proxy-tests-") as path:
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(here)
