"""Settings: code defaults < config.yaml < HUIYUAN_* environment, validated, strict in production."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server.config import DEV_DATA_KEY, DEV_JWT_SECRET, ConfigError, Settings, load_settings

NO_FILE = "/nonexistent/huiyuan/config.yaml"  # HUIYUAN_CONFIG naming a missing file: defaults apply
REAL_DATA_KEY = base64.b64encode(bytes(range(32))).decode()


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _production_env(**overrides: str) -> dict[str, str]:
    """Every value production insists on, real-looking; overrides replace single keys."""
    env = {
        "HUIYUAN_ENVIRONMENT": "production",
        "HUIYUAN_DATABASE__URL": "mysql://huiyuan:s3cret@db.internal:3306/huiyuan",
        "HUIYUAN_REDIS__URL": "redis://cache.internal:6379/0",
        "HUIYUAN_SECURITY__JWT_SECRET": "Zq8vN3kP0wX7rT2mB5yH9cL4sD6fG1jA",
        "HUIYUAN_SECURITY__DATA_KEY": REAL_DATA_KEY,
        "HUIYUAN_WECHAT__OFFICIAL__APPID": "wx1234567890abcdef",
        "HUIYUAN_WECHAT__OFFICIAL__SECRET": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "HUIYUAN_WECHAT__OFFICIAL__TOKEN": "Tk7Hs2Lq9Wm4",
        "HUIYUAN_WECHAT__OFFICIAL__ENCODING_AES_KEY": "Q" * 43,
        "HUIYUAN_WECHAT__OFFICIAL__API_BASE": "https://api.weixin.qq.com",
        "HUIYUAN_WECHAT__MINIPROGRAM__SECRET": "9a8b7c6d5e4f30211203f4e5d6c7b8a9",
        "HUIYUAN_WECHAT__MINIPROGRAM__API_BASE": "https://api.weixin.qq.com",
        "HUIYUAN_WECHAT__PAY__API_KEY": "Pk2v9XcQ7nRt4LmZ8bWs3YhJ6dFg1Ka5",
        "HUIYUAN_WECHAT__PAY__API_V3_KEY": "V3k9Lm2Nq8Rs4Tu6Wx1Yz3Ab5Cd7Ef0G",
        "HUIYUAN_WECHAT__PAY__API_BASE": "https://api.mch.weixin.qq.com",
        "HUIYUAN_WECHAT__PAY__PRIVATE_KEY_PATH": "/etc/huiyuan/apiclient_key.pem",
        "HUIYUAN_WECHAT__PAY__PLATFORM_PUBLIC_KEY_PATH": "/etc/huiyuan/pub_key.pem",
        "HUIYUAN_WECHAT__EMULATOR__ENABLED": "false",
    }
    env.update(overrides)
    return env


def test_defaults_without_file_or_environment(tmp_path):
    settings = load_settings(environ={"HUIYUAN_CONFIG": str(tmp_path / "none.yaml")})
    assert settings == Settings()
    assert settings.environment == "development"
    assert settings.server.port == 8000
    assert settings.server.request_max_size == 1_048_576
    assert settings.database.url == "sqlite://data/huiyuan.sqlite3"
    assert settings.redis.url == "memory://"
    assert settings.security.jwt_secret == DEV_JWT_SECRET
    assert settings.security.login_max_failures == 5
    assert settings.wechat.official.api_base == "emulator"
    assert settings.is_production is False


def test_named_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_yaml_overrides_defaults(tmp_path):
    path = _yaml(
        tmp_path,
        "server:\n  port: 9100\n  request_max_size: 65536\n"
        "database:\n  url: mysql://u:p@db:3306/hy\n"
        "wechat:\n  official:\n    appid: wxfromyaml\n",
    )
    settings = load_settings(path, environ={})
    assert settings.server.port == 9100
    assert settings.server.request_max_size == 65536
    assert settings.server.host == "127.0.0.1"
    assert settings.database.url == "mysql://u:p@db:3306/hy"
    assert settings.database.pool_max == 20
    assert settings.wechat.official.appid == "wxfromyaml"
    assert settings.wechat.official.token == "devtoken"


def test_environment_overrides_yaml(tmp_path):
    path = _yaml(
        tmp_path,
        "environment: development\n"
        "database:\n  url: sqlite://from-yaml.sqlite3\n  pool_max: 7\n"
        "security:\n  jwt_secret: yaml-secret\n"
        "wechat:\n  official:\n    appid: wxfromyaml\n    token: yamltoken\n",
    )
    env = {
        "HUIYUAN_DATABASE__URL": "mysql://env:pw@db:3306/hy",
        "HUIYUAN_WECHAT__OFFICIAL__APPID": "wxfromenv",
        "HUIYUAN_SECURITY__JWT_SECRET": "env-secret",
        "HUIYUAN_SERVER__PORT": "9200",
        "UNRELATED": "ignored",
    }
    settings = load_settings(path, environ=env)
    assert settings.database.url == "mysql://env:pw@db:3306/hy"
    assert settings.database.pool_max == 7
    assert settings.wechat.official.appid == "wxfromenv"
    assert settings.wechat.official.token == "yamltoken"
    assert settings.security.jwt_secret == "env-secret"
    assert settings.server.port == 9200


def test_environment_variable_selects_production_over_yaml(tmp_path):
    path = _yaml(tmp_path, "environment: development\n")
    settings = load_settings(path, environ=_production_env())
    assert settings.environment == "production"
    assert settings.is_production is True


def test_config_path_can_come_from_huiyuan_config(tmp_path):
    path = _yaml(tmp_path, "server:\n  port: 9300\n")
    assert load_settings(environ={"HUIYUAN_CONFIG": str(path)}).server.port == 9300


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValueError):
        settings.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"HUIYUAN_SERVER__PORT": "not-a-port"}, "server.port"),
        ({"HUIYUAN_SERVER__PORT": "70000"}, "server.port"),
        ({"HUIYUAN_SERVER__REQUEST_MAX_SIZE": "10"}, "server.request_max_size"),
        ({"HUIYUAN_SECURITY__ACCESS_TOKEN_TTL": "5"}, "security.access_token_ttl"),
        ({"HUIYUAN_ENVIRONMENT": "staging"}, "environment"),
        ({"HUIYUAN_WECHAT__HTTP_TIMEOUT": "0"}, "wechat.http_timeout"),
        ({"HUIYUAN_SERVER__PROT": "8000"}, "server.prot"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, env, key):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"HUIYUAN_CONFIG": str(tmp_path / "none.yaml"), **env})
    assert f"{key}:" in str(raised.value)


def test_invalid_yaml_value_names_the_key(tmp_path):
    path = _yaml(tmp_path, "security:\n  login_max_failures: zero\n")
    with pytest.raises(ConfigError, match=r"security\.login_max_failures:"):
        load_settings(path, environ={})


def test_broken_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_yaml(tmp_path, "server: [port: 1\n"), environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(_yaml(tmp_path, "- a\n- b\n"), environ={})


def test_production_with_defaults_is_refused_listing_every_problem(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_settings(_yaml(tmp_path, "environment: production\n"), environ={})
    message = str(raised.value)
    assert message.startswith("refusing to start in production")
    for key in (
        "security.jwt_secret",
        "security.data_key",
        "wechat.official.secret",
        "wechat.official.token",
        "wechat.miniprogram.secret",
        "wechat.pay.api_key",
        "wechat.pay.api_v3_key",
        "wechat.official.encoding_aes_key",
        "wechat.official.api_base",
        "wechat.miniprogram.api_base",
        "wechat.pay.api_base",
        "wechat.emulator.enabled",
        "redis.url",
    ):
        assert key in message, key
    assert "HUIYUAN_SECURITY__JWT_SECRET" in message


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"HUIYUAN_SECURITY__JWT_SECRET": DEV_JWT_SECRET}, "security.jwt_secret is a placeholder"),
        ({"HUIYUAN_SECURITY__JWT_SECRET": "please-changeme-soon-0123456789"}, "security.jwt_secret is a placeholder"),
        ({"HUIYUAN_SECURITY__DATA_KEY": DEV_DATA_KEY}, "security.data_key is a placeholder"),
        ({"HUIYUAN_WECHAT__PAY__API_KEY": ""}, "wechat.pay.api_key is a placeholder"),
        ({"HUIYUAN_WECHAT__OFFICIAL__API_BASE": "emulator"}, "wechat.official.api_base points at the emulator"),
        (
            {"HUIYUAN_WECHAT__PAY__API_BASE": "http://127.0.0.1:8000/_emulator"},
            "wechat.pay.api_base points at the emulator",
        ),
        ({"HUIYUAN_WECHAT__EMULATOR__ENABLED": "true"}, "wechat.emulator.enabled must be false"),
        ({"HUIYUAN_REDIS__URL": "memory://"}, "redis.url is the in-process stand-in"),
    ],
)
def test_production_refuses_each_stand_in(override, problem):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"HUIYUAN_CONFIG": NO_FILE, **_production_env(**override)})
    assert problem in str(raised.value)


def test_production_with_real_values_loads():
    settings = load_settings(environ={"HUIYUAN_CONFIG": NO_FILE, **_production_env()})
    assert settings.is_production
    assert settings.redis.url == "redis://cache.internal:6379/0"
    assert settings.wechat.official.appid == "wx1234567890abcdef"
    assert settings.wechat.emulator.enabled is False
    assert settings.security.data_key == REAL_DATA_KEY


def test_development_accepts_the_stand_ins():
    settings = load_settings(environ={"HUIYUAN_CONFIG": NO_FILE})
    assert settings.redis.url == "memory://"
    assert settings.wechat.emulator.enabled is True


def test_config_yaml_names_every_setting_with_its_default():
    """The shipped config.yaml documents every key (one commented line each) and changes nothing."""
    import yaml

    from server.config import Settings

    path = Path(__file__).resolve().parents[2] / "config.yaml"
    shipped = yaml.safe_load(path.read_text(encoding="utf-8"))

    def missing(model: type, data: dict, prefix: str = "") -> list[str]:
        gaps = []
        for name, field in model.model_fields.items():
            if name not in data:
                gaps.append(prefix + name)
            elif isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
                gaps += missing(field.annotation, data[name], f"{prefix}{name}.")
        return gaps

    assert missing(Settings, shipped) == []
    assert load_settings(path, environ={}) == Settings()
