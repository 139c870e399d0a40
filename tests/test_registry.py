import pytest

from sampan.errors import ConfigError, NotFoundError
from sampan.registry import Registry


def test_register_and_get():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1
    assert "alpha" in reg and list(reg) == ["alpha"] and len(reg) == 1


def test_duplicate_name_is_an_error():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    with pytest.raises(ConfigError, match="registered twice"):
        reg.add("alpha", 2)


def test_unknown_name_suggests_close_names():
    reg: Registry[int] = Registry("widget")
    reg.add("resnet18", 1)
    reg.add("resnet50", 2)
    with pytest.raises(NotFoundError, match="Did you mean: resnet18"):
        reg.get("resnet81")
