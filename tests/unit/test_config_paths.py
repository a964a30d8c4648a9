"""A path key whose ``~user`` cannot be expanded is a config error naming the key, not a RuntimeError from
pathlib (found by the property test with ``secret_key_file = ~0``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import load_settings
from supervisor.errors import ConfigError


@pytest.mark.parametrize(("section", "key"), [("collector", "secret_key_file"), ("collector", "spool_dir"),
                                              ("logging", "file")])
def test_an_unknown_user_in_a_path_is_a_config_error_naming_the_key(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "collector.ini"
    path.write_text(f"[{section}]\n{key} = ~no-such-user-here/x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"invalid {section}\.{key} = '~no-such-user-here/x': cannot expand"):
        load_settings(path)


def test_the_home_folder_still_expands(tmp_path: Path) -> None:
    path = tmp_path / "collector.ini"
    path.write_text("[collector]\nsecret_key_file = ~/collector.key\n", encoding="utf-8")
    assert load_settings(path).secret_key_file == str(Path("~/collector.key").expanduser())
