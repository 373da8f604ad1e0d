"""The one compiled part of regfd: the message model's word pass and the signals' compact text, its
offset maps and its sentence ends (regfd/scan/_wordset.c).

Everything else is declared in pyproject.toml. The extension is optional: where
it cannot be built (no C compiler), regfd reads the same words with Hyperscan
(regfd/scan/wordindex.py) and does the rest in Python (evidence.compact_text,
separator_runs and sentence_ends), slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("regfd.scan._wordset", ["regfd/scan/_wordset.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"])])
