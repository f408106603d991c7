"""Guest disk images built from recipes, cached."""
