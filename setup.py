"""Build hook: the wheel carries the study YAMLs and the SEML experiment file, kept once in the repository.

Everything else about the package is declared in ``pyproject.toml``. A cluster user who ``pip install``-s the wheel
has no checkout, yet the README tells them to copy a study from ``seml_configs/`` and to point SEML at
``experiments/walking_noise_experiment.py``. So ``build_py`` copies both into ``walking_noise/study_files/`` (the
same layout as the checkout, so a YAML's ``project_root_dir: ..`` finds the experiment), and
``walking-noise studies --copy-to DIR`` writes them back out (:mod:`walking_noise.studies`). An editable install
skips the copy: there :mod:`walking_noise.studies` reads the checkout's own folders. ``MANIFEST.in`` puts the same
files into the sdist, so a wheel built from the sdist has them too. YAMLs whose name starts with ``_`` are
someone's scratch studies and are not shipped.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: folder of the checkout -> the files of it that the wheel ships (the layout under walking_noise/study_files/)
STUDY_FILES = {"seml_configs": "[!_]*.yaml", "experiments": "walking_noise_experiment.py"}


class BuildPyWithStudyFiles(build_py):
    """``build_py`` that also copies :data:`STUDY_FILES` into ``walking_noise/study_files/`` of the build."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "walking_noise" / "study_files"
        for folder, pattern in STUDY_FILES.items():
            files = sorted((ROOT / folder).glob(pattern))
            if not files:
                raise FileNotFoundError(f"{ROOT / folder} has no {pattern}: the wheel would ship no studies; build "
                                        f"from a checkout or from the sdist (MANIFEST.in includes them)")
            self.mkpath(str(target / folder))
            for path in files:
                self.copy_file(str(path), str(target / folder / path.name))


setup(cmdclass={"build_py": BuildPyWithStudyFiles})
