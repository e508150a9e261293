"""Settings are a frozen, typed object, and a misspelt setting in the code fails here, before it runs."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path

import pytest

from newsletter.core.config import FIELDS, SETTINGS, ConfigError, Settings, load_settings

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
FIELD_NAMES = {f.name for f in dataclasses.fields(Settings)}


def settings_reads(source: str, filename: str = "<source>") -> list[tuple[int, str, str]]:
    """Every attribute read on something that holds settings: (line, expression, attribute).

    A name holds settings when it is ``settings`` or an attribute ``.settings`` (``runtime.settings``,
    ``app.settings``, ``current_app.settings``).
    """
    reads = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Attribute):
            continue
        holder = node.value
        if (isinstance(holder, ast.Name) and holder.id == "settings") or (
            isinstance(holder, ast.Attribute) and holder.attr == "settings"
        ):
            reads.append((node.lineno, ast.unparse(node), node.attr))
    return reads


def unknown_settings(source: str, filename: str = "<source>") -> list[str]:
    """Reads of a setting that Settings has no field for, as ``file:line: expression``."""
    return [
        f"{filename}:{line}: {expression}"
        for line, expression, attr in settings_reads(source, filename)
        if attr not in FIELD_NAMES
    ]


def test_every_setting_the_code_reads_is_a_field():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += unknown_settings(path.read_text("utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not found, "no such setting (see newsletter/core/config.py Settings):\n" + "\n".join(found)


def test_the_checker_finds_a_typo():
    planted = (
        "def send(settings, runtime, current_app):\n"
        "    a = settings.smtp_url\n"
        "    b = settings.smtp_ulr\n"
        "    c = runtime.settings.batch_sise\n"
        "    d = current_app.settings.base_url\n"
        "    e = runtime.config\n"  # not settings: not checked
    )
    assert unknown_settings(planted, "planted.py") == [
        "planted.py:3: settings.smtp_ulr",
        "planted.py:4: runtime.settings.batch_sise",
    ]


def test_the_checker_reads_the_whole_package():
    # A checker that silently read nothing would pass whatever the code says.
    reads = [r for path in PACKAGE.rglob("*.py") for r in settings_reads(path.read_text("utf-8"))]
    assert len(reads) > 50
    assert {"smtp_url", "base_url", "from_", "marketing_caps"} <= {attr for _, _, attr in reads}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k"})


def test_settings_are_frozen(settings):
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.smtp_url = "smtp://elsewhere"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        settings.smtp_ulr = "smtp://typo"  # type: ignore[attr-defined]  (slots: no new attributes)
    changed = dataclasses.replace(settings, smtp_url="smtp://relay.test")
    assert changed.smtp_url == "smtp://relay.test" and settings.smtp_url == ""


def test_a_typo_in_a_read_is_an_error(settings):
    with pytest.raises(AttributeError):
        settings.smtp_ulr  # type: ignore[attr-defined]  # noqa: B018


def test_every_value_has_its_fields_type(tmp_path):
    hints = typing.get_type_hints(Settings)
    plain = tmp_path / "plain"
    plain.mkdir()
    config = tmp_path / "config.toml"
    config.write_text('quiet_hours = ""\nmarketing_caps = "2/1d"\n')  # None and a parsed tuple
    for settings in (
        load_settings(plain, environ={"NEWSLETTER_SECRET_KEY": "k"}),
        load_settings(
            tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_SECRET_KEY_FALLBACKS": "a,b"}
        ),
    ):
        for name, hint in hints.items():
            assert _matches(getattr(settings, name), hint), (
                f"{name}: {getattr(settings, name)!r} is not {hint}"
            )
    parsed = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k"})
    assert parsed.quiet_hours is None and parsed.marketing_caps == ((2, 86400),)


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    return isinstance(value, hint)


def test_every_field_has_a_key_a_parser_and_a_doc():
    assert set(FIELDS.values()) == FIELD_NAMES
    assert FIELDS["FROM"] == "from_" and FIELDS["SMTP_URL"] == "smtp_url"
    for key, setting in SETTINGS.items():
        assert key.isupper() and setting.doc and callable(setting.parse)


def test_overrides_take_upper_case_keys_and_refuse_unknown_ones(tmp_path):
    settings = load_settings(tmp_path, environ={}, overrides={"SECRET_KEY": "k", "FROM": "A <a@shop.test>"})
    assert settings.from_ == "A <a@shop.test>"
    with pytest.raises(ConfigError, match="^SMTP_ULR: unknown setting"):
        load_settings(tmp_path, environ={}, overrides={"SECRET_KEY": "k", "SMTP_ULR": "smtp://x"})
    with pytest.raises(ConfigError, match="^NEWSLETTER_BATCH_SIZE: expected a whole number"):
        load_settings(tmp_path, environ={}, overrides={"SECRET_KEY": "k", "BATCH_SIZE": "many"})


def test_secrets_stay_out_of_the_repr(tmp_path):
    settings = load_settings(
        tmp_path, environ={"NEWSLETTER_SECRET_KEY": "sekrit-key", "NEWSLETTER_API_TOKEN": "t" * 20}
    )
    assert "sekrit-key" not in repr(settings) and "t" * 20 not in repr(settings)
    assert "redis_url=" in repr(settings)


def test_the_app_reads_its_settings_and_gives_flask_its_own_keys(make_app):
    app = make_app(STORE_NAME="Typed Store")
    assert app.settings.store_name == "Typed Store"
    assert app.settings is app.extensions["newsletter"].settings
    assert app.config["SECRET_KEY"] == app.settings.secret_key
    assert app.config["WTF_CSRF_ENABLED"] is True
    assert "STORE_NAME" not in app.config  # ours are not in Flask's dict any more
