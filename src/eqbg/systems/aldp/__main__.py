"""Build the shipped structure: ``python -m eqbg.systems.aldp OUT.pdb`` (default: the shipped path)."""

import sys

from eqbg.systems.aldp.geometry import write_structure
from eqbg.systems.aldp.topology import STRUCTURE_PATH

write_structure(sys.argv[1] if len(sys.argv) > 1 else STRUCTURE_PATH)
