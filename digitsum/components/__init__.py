"""Built-in components. They register through digitsum's own entry points (see pyproject.toml),
exactly as a plugin's components do: nothing in the engine knows them by name."""
