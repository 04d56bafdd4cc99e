"""lemario: a JEPA world model that learns NES Super Mario Bros from pixels, and the tools to measure it."""

__version__ = "0.1.0"
