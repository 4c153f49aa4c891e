"""One module per model: its settings dataclass (every field a config key under
``defaults.model.<name>``) beside its builder ``build(system, settings, ode) -> Flow``; each is
registered in :mod:`eqbg.flows.registry`."""
