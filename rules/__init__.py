"""See model/native.py: the compiled build of the pure core, when one matches the sources."""

from model.native import activate

activate(__path__, __name__)
