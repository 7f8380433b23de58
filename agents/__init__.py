"""Concrete agents shipped with mas."""
