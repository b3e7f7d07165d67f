"""Build the optional native tokenization engine (everything else is in pyproject.toml).

The C extension ``lm.tokenizer.native._native`` is optional: without a C compiler or the Python
headers, the build prints a warning and the package installs without it (the pure-Python
engine is then used). ``LM_NATIVE_BUILD=0`` skips it on purpose.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the extension cannot be compiled."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler at all, and the like
            self._warn(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # a compiler that fails (missing Python.h, ...)
            self._warn(e)

    @staticmethod
    def _warn(e):
        print(
            f"WARNING: the native tokenization engine (lm.tokenizer.native._native) was not built ({e}); "
            f"lm uses its pure-Python engine. Install a C compiler and the Python headers "
            f"(e.g. apt install build-essential python3-dev) and reinstall to get it.",
            file=sys.stderr,
        )


ext_modules = []
if os.environ.get("LM_NATIVE_BUILD", "1") != "0":
    ext_modules.append(
        Extension(
            "lm.tokenizer.native._native",
            sources=["lm/tokenizer/native/_native.c"],
            depends=[
                "lm/tokenizer/native/_unicode_tables.h",
                "lm/tokenizer/native/_scan.h",
                "lm/tokenizer/native/_scan_path.h",
            ],
            extra_compile_args=["-O3"] if os.name != "nt" else [],
            optional=True,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
