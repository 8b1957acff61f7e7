"""The JAX engine: component kinds, theory -> predict function, fitting, search."""
