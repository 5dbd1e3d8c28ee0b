import subprocess
import sys
from importlib import metadata

import pytest

from bench.method import Method, MethodInfo
from bench.registry import BUILTIN, Registry, RegistryError


def _cls(name, qual="M"):
    return type(qual, (Method,), {"info": MethodInfo(name=name, family="baseline"), "__module__": "tests.fake"})


def test_register_and_get():
    reg = Registry({}, "reasonrec.none")
    A = reg.register()(_cls("alpha"))
    assert reg.get("alpha") is A and reg.names() == ["alpha"]


def test_duplicate_name_rejected():
    reg = Registry({}, "reasonrec.none")
    reg.register()(_cls("alpha", "A"))
    with pytest.raises(RegistryError, match="duplicate method name 'alpha'"):
        reg.register()(_cls("alpha", "B"))


def test_unknown_name_suggests_close_ones():
    reg = Registry({}, "reasonrec.none")
    reg.register()(_cls("sasrec"))
    with pytest.raises(RegistryError, match="did you mean 'sasrec'"):
        reg.get("sasrc")


def test_lazy_builtin_imports_only_on_demand():
    code = ("import sys; from bench.registry import REGISTRY; REGISTRY.names(); "
            "assert 'methods.recbole_models' not in sys.modules; REGISTRY.get('pop'); "
            "assert 'methods.simple' in sys.modules and 'methods.recbole_models' not in sys.modules; "
            "REGISTRY.all(); assert 'torch' not in sys.modules and 'recbole' not in sys.modules, 'ls must stay light'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_plugin(monkeypatch):
    ep = metadata.EntryPoint(name="plug", value="tests.plugin_fixture:PluginMethod", group="reasonrec.methods")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [ep] if group == "reasonrec.methods" else [])
    reg = Registry({"pop": "methods.simple"}, "reasonrec.methods")
    assert "plug" in reg.names()
    assert reg.get("plug").info.name == "plug"


def test_entry_point_clash_is_an_error(monkeypatch):
    ep = metadata.EntryPoint(name="pop", value="x:Y", group="reasonrec.methods")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [ep])
    reg = Registry({"pop": "methods.simple"}, "reasonrec.methods")
    with pytest.raises(RegistryError, match="duplicate"):
        reg.names()


def test_builtins_have_consistent_names():
    from bench.registry import REGISTRY

    for name in BUILTIN:
        assert REGISTRY.get(name).info.name == name


def test_a_partial_nested_block_keeps_the_method_defaults():
    from bench.registry import get_method
    from bench.specs import SpecError
    from bench.runner import build_spec

    cls = get_method("minionerec")
    default = cls.Config()
    cfg = cls.Config(sft={"batch_size": 16}, rl={"max_prompts": 8})
    assert cfg.sft.batch_size == 16 and cfg.sft.epochs == default.sft.epochs and cfg.sft.lr == default.sft.lr
    assert cfg.rl.max_prompts == 8 and cfg.rl.num_generations == default.rl.num_generations
    import pytest

    with pytest.raises(SpecError, match="method_config.sft.batch_sise"):
        build_spec("minionerec", "ml-100k", sets=["method_config.sft.batch_sise=16"])
