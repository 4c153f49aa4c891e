"""eqbg: equivariant Boltzmann generators, reproduced from scratch under one protocol."""

__version__ = "0.1.0"
