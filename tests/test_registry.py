import pytest

from ts_defense._registry import Registry


def test_lookup_names_the_known_entries_on_a_typo():
    reg = Registry("attack", {"pgd": 1, "fgsm": 2})
    assert reg.lookup("pgd") == 1
    with pytest.raises(ValueError, match=r"unknown attack 'pdg'; choose one of 'pgd', 'fgsm'"):
        reg.lookup("pdg")
    with pytest.raises(ValueError, match="unknown attack"):
        reg.lookup(["pgd"])  # not a str: refused, not a TypeError from hashing


def test_register_refuses_a_name_twice_unless_replacing():
    reg = Registry("recipe")
    assert reg.register("hat", 3) == 3 and dict(reg) == {"hat": 3}
    with pytest.raises(ValueError, match="recipe 'hat' is already registered"):
        reg.register("hat", 4)
    reg.register("hat", 4, replace=True)
    assert reg["hat"] == 4
    with pytest.raises(ValueError, match="non-empty str"):
        reg.register("", 5)
