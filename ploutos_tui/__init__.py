"""Ploutos control panel (Textual). Imports the engine; the engine never imports this package."""
