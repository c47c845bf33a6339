"""Build hook: the trained detector and its labels ship inside the wheel, as package data.

The repository keeps them where training writes them, models/ (with the model card and the
training code, which the wheel leaves out). A wheel build copies models/*.tflite (the CPU model,
and the Edge TPU build when `make edgetpu` made one) and models/labels.txt into the built
package as edge/models/, where edge.config.detector finds them with importlib.resources. Only
the files' names are fixed here, never their contents: a retrained model ships as it is.

Editable installs (`pip install -e`, make setup) copy nothing: the checkout's models/ is read
in place. Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"
# edge.config.detector's MODEL_FILE and LABELS_FILE: a wheel without them cannot run.
REQUIRED = ("head_detector_int8.tflite", "labels.txt")
PACKAGED = ("*.tflite", "labels.txt")  # what ships; MODEL_CARD.md and training/ do not


class BuildWithModel(build_py):
    """build_py, then the model files into <build_lib>/edge/models/."""

    def run(self) -> None:
        """Build the packages as usual, then add the model (not for editable installs)."""
        super().run()
        if getattr(self, "editable_mode", False):
            return
        missing = [name for name in REQUIRED if not (MODELS / name).is_file()]
        if missing:
            raise SystemExit(f"{MODELS}: {', '.join(missing)} missing; a wheel without the "
                             "model cannot run (make model builds it)")
        target = Path(self.build_lib) / "edge" / "models"
        target.mkdir(parents=True, exist_ok=True)
        for pattern in PACKAGED:
            for path in sorted(MODELS.glob(pattern)):
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithModel})
