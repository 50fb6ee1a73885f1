# Hive's version, as agents report it when they register (and pyproject.toml states it).
__version__ = "0.1.0"
