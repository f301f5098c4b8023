"""Build hook: the wheel carries the canonical top-level files as package data.

``models/``, ``data/`` and ``collectors/`` stay at the top of the repository, where they
are edited and reviewed; building copies the files qbayes reads at run time into
``qbayes/_resources/`` (see ``qbayes/resources.py``). The project's metadata is in
pyproject.toml; this file only adds the copying step.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# folder -> the files of it that an installed qbayes reads (data/published/ stays out: it is
# the source of the import, not something qbayes reads when it runs)
SHIPPED = {
    "models": ("*.toml",),
    "data": ("*.parquet", "*.csv", "*.nc"),
    "collectors": ("*.toml",),
}
PACKAGED = Path("qbayes") / "_resources"


class BuildWithResources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level files in place
        for folder, patterns in SHIPPED.items():
            target = Path(self.build_lib) / PACKAGED / folder
            self.mkpath(str(target))
            for pattern in patterns:
                for f in sorted((ROOT / folder).glob(pattern)):
                    self.copy_file(str(f), str(target / f.name))


setup(cmdclass={"build_py": BuildWithResources})
