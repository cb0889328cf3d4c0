"""The credential vault: passwords encrypted at rest with a key kept private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pegabridge.config import Settings
from pegabridge.installs.vault import (
    KEY_FILE_NAME,
    Vault,
    VaultError,
    load_master_key,
    vault_for,
)


def keyless_settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path / "var", secret_key="")


def test_a_password_comes_back_from_its_stored_form() -> None:
    vault = Vault(b"master")

    assert vault.decrypt(vault.encrypt("pä$$ word")) == "pä$$ word"


def test_the_stored_form_does_not_contain_the_password() -> None:
    assert "hunter2" not in Vault(b"master").encrypt("hunter2")


def test_a_vault_with_another_key_cannot_read_the_password() -> None:
    stored = Vault(b"master").encrypt("hunter2")

    with pytest.raises(VaultError):
        Vault(b"another").decrypt(stored)


def test_a_damaged_stored_value_gives_a_vault_error() -> None:
    with pytest.raises(VaultError):
        Vault(b"master").decrypt("not a token")


def test_the_key_file_is_made_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = keyless_settings(tmp_path)

    load_master_key(settings)

    mode = stat.S_IMODE((settings.var_dir / KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600


def test_the_key_file_is_reused_so_passwords_survive_a_restart(tmp_path: Path) -> None:
    settings = keyless_settings(tmp_path)
    stored = vault_for(settings).encrypt("hunter2")

    assert vault_for(settings).decrypt(stored) == "hunter2"


def test_the_secret_key_setting_wins_over_the_key_file(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", secret_key="from-env")

    assert load_master_key(settings) == b"from-env"
    assert not (settings.var_dir / KEY_FILE_NAME).exists()


def test_derived_keys_differ_per_purpose() -> None:
    vault = Vault(b"master")

    assert vault.derive(b"tokens") != vault.derive(b"sessions")
