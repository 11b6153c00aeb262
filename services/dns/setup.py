"""The one thing pyproject.toml cannot say: the optional C accelerator of the UDP hot loop.

`optional=True`: without a compiler the package still installs and the UDP server falls back to
the ctypes batch (datagram_batch.py); the "DNS listening" log line names the path in use.
"""

import sys

from setuptools import Extension, setup

NATIVE_BATCH = Extension(
    "acmezone_dns._native_batch",
    sources=["src/acmezone_dns/_native_batch.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
    optional=True,
)

setup(ext_modules=[NATIVE_BATCH] if sys.platform.startswith("linux") else [])
