"""The worker runtime (I/O); its pure task may run compiled (model/native.py)."""

from model.native import activate

activate(__path__, __name__)
