"""LASAR plugin: teacher CoT (``teacher``), semantic segmentation (``segment``), the method (``method``)."""
from methods.lasar.method import LASAR  # noqa: F401  (registers "lasar")
