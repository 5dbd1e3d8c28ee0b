"""An outside plugin, as a third-party package would ship it (loaded through an entry point)."""
from bench.method import Method, MethodInfo


class PluginMethod(Method):
    info = MethodInfo(name="plug", family="baseline", paper="-")
