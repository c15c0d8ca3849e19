"""Ploutos control panel (Textual). Enters the engine only through engine.api (and engine.errors);
the engine never imports this package."""
