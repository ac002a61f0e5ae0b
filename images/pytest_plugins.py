"""Which pytest plugin provides what: fixtures, markers, command-line options, configuration keys.

One table per fact, read by the readers of a project's pytest configuration (what to install before
the tests run) and by the repairs (what a failed run says is missing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Fixture -> the plugin that provides it. Built-in fixtures and the project's own are absent: a
#: missing one of those is not fixed by installing anything.
FIXTURE_PLUGINS: Mapping[str, str] = {
    "mocker": "pytest-mock",
    "class_mocker": "pytest-mock",
    "module_mocker": "pytest-mock",
    "package_mocker": "pytest-mock",
    "session_mocker": "pytest-mock",
    "benchmark": "pytest-benchmark",
    "httpserver": "pytest-httpserver",
    "freezer": "pytest-freezer",
    "aiohttp_client": "pytest-aiohttp",
    "aiohttp_server": "pytest-aiohttp",
    "aiohttp_raw_server": "pytest-aiohttp",
    "aiohttp_unused_port": "pytest-aiohttp",
    "loop": "pytest-aiohttp",
    "event_loop": "pytest-asyncio",
    "event_loop_policy": "pytest-asyncio",
    "unused_tcp_port": "pytest-asyncio",
    "unused_tcp_port_factory": "pytest-asyncio",
    "anyio_backend": "anyio",
    "nursery": "pytest-trio",
    "autojump_clock": "pytest-trio",
    "io_loop": "pytest-tornado",
    "datadir": "pytest-datadir",
    "shared_datadir": "pytest-datadir",
    "original_datadir": "pytest-datadir",
    "snapshot": "syrupy",
    "requests_mock": "requests-mock",
    "respx_mock": "respx",
    "httpx_mock": "pytest-httpx",
    "celery_app": "celery[pytest]",
    "celery_worker": "celery[pytest]",
    "celery_config": "celery[pytest]",
    "celery_session_app": "celery[pytest]",
    "celery_session_worker": "celery[pytest]",
    "django_db": "pytest-django",
    "db": "pytest-django",
    "transactional_db": "pytest-django",
    "django_db_setup": "pytest-django",
    "django_db_blocker": "pytest-django",
    "django_user_model": "pytest-django",
    "django_assert_num_queries": "pytest-django",
    "admin_client": "pytest-django",
    "admin_user": "pytest-django",
    "client": "pytest-django",
    "async_client": "pytest-django",
    "rf": "pytest-django",
    "settings": "pytest-django",
    "mailoutbox": "pytest-django",
    "qtbot": "pytest-qt",
    "qapp": "pytest-qt",
    "lazy_fixture": "pytest-lazy-fixture",
    "fs": "pyfakefs",
    "time_machine": "time-machine",
    "faker": "Faker",
    "xprocess": "pytest-xprocess",
    "httpbin": "pytest-httpbin",
    "socket_disabled": "pytest-socket",
    "socket_enabled": "pytest-socket",
    "vcr": "pytest-recording",
    "vcr_config": "pytest-recording",
    "postgresql": "pytest-postgresql",
    "postgresql_proc": "pytest-postgresql",
    "redisdb": "pytest-redis",
    "docker_ip": "pytest-docker",
    "docker_services": "pytest-docker",
    "subtests": "pytest-subtests",
    "cov": "pytest-cov",
    "selenium": "pytest-selenium",
}

#: Marker -> the plugin that registers it.
MARKER_PLUGINS: Mapping[str, str] = {
    "asyncio": "pytest-asyncio",
    "trio": "pytest-trio",
    "anyio": "anyio",
    "gen_test": "pytest-tornado",
    "django_db": "pytest-django",
    "urls": "pytest-django",
    "ignore_template_errors": "pytest-django",
    "timeout": "pytest-timeout",
    "benchmark": "pytest-benchmark",
    "flaky": "pytest-rerunfailures",
    "order": "pytest-order",
    "run": "pytest-ordering",
    "dependency": "pytest-dependency",
    "vcr": "pytest-recording",
    "default_cassette": "pytest-recording",
    "block_network": "pytest-recording",
    "httpx_mock": "pytest-httpx",
    "respx": "respx",
    "freeze_time": "pytest-freezer",
    "xdist_group": "pytest-xdist",
    "repeat": "pytest-repeat",
    "mpl_image_compare": "pytest-mpl",
    "remote_data": "pytest-remotedata",
    "enable_socket": "pytest-socket",
    "disable_socket": "pytest-socket",
    "allow_hosts": "pytest-socket",
    "celery": "celery[pytest]",
    "datafiles": "pytest-datafiles",
    "qt_no_exception_capture": "pytest-qt",
    "qt_log_level_fail": "pytest-qt",
    "qt_log_ignore": "pytest-qt",
    "httpserver_listen_address": "pytest-httpserver",
}

#: Command-line option (its name, before any ``=``; a full match) -> the plugin that adds it.
OPTION_PLUGINS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(option), plugin)
    for option, plugin in (
        (r"--(?:no-)?cov(?:-.+)?", "pytest-cov"),
        (r"--timeout(?:[-_].+)?|--session-timeout", "pytest-timeout"),
        (r"-n(?:\d+|auto|logical)?|--(?:num|max)processes|--dist|--tx|--max-worker-restart", "pytest-xdist"),
        (r"--reruns(?:-delay)?|--only-rerun|--rerun-except", "pytest-rerunfailures"),
        (r"--benchmark(?:-.+)?", "pytest-benchmark"),
        (r"--mypy.*", "pytest-mypy"),
        (r"--html|--self-contained-html|--css", "pytest-html"),
        (r"--ds|--dc|--reuse-db|--create-db|--no-migrations|--nomigrations|--migrations", "pytest-django"),
        (r"--randomly(?:-.+)?", "pytest-randomly"),
        (r"--hypothesis(?:-.+)?", "hypothesis"),
        (r"--snapshot-.+", "syrupy"),
        (r"--asyncio-mode", "pytest-asyncio"),
        (r"--flake8", "pytest-flake8"),
        (r"--flakes", "pytest-flakes"),
        (r"--pycodestyle", "pytest-pycodestyle"),
        (r"--doctest-plus|--doctest-rst|--text-file-format", "pytest-doctestplus"),
        (r"--record-mode|--block-network|--allowed-hosts", "pytest-recording"),
        (r"--disable-socket|--allow-hosts|--allow-unix-socket", "pytest-socket"),
        (r"--count|--repeat-scope", "pytest-repeat"),
        (r"--json-report.*", "pytest-json-report"),
        (r"--alluredir|--clean-alluredir", "allure-pytest"),
        (r"--instafail", "pytest-instafail"),
        (r"--mpl.*", "pytest-mpl"),
        (r"--remote-data", "pytest-remotedata"),
        (r"--nbval.*", "nbval"),
        (r"--testmon.*", "pytest-testmon"),
        (r"--memray.*", "pytest-memray"),
        (r"--forked", "pytest-forked"),
        (r"--black", "pytest-black"),
        (r"--isort", "pytest-isort"),
        (r"--pylint", "pytest-pylint"),
        (r"--ruff(?:-format)?", "pytest-ruff"),
        (r"--codeblocks", "pytest-codeblocks"),
        (r"--typeguard-packages", "typeguard"),
        (r"--beartype-packages", "beartype"),
    )
)

#: Configuration key, lower-cased (``configparser`` lower-cases INI keys) -> the plugin that reads it.
INI_PLUGINS: Mapping[str, str] = {
    "asyncio_mode": "pytest-asyncio",
    "asyncio_default_fixture_loop_scope": "pytest-asyncio",
    "asyncio_default_test_loop_scope": "pytest-asyncio",
    "timeout": "pytest-timeout",
    "timeout_method": "pytest-timeout",
    "timeout_func_only": "pytest-timeout",
    "session_timeout": "pytest-timeout",
    "env": "pytest-env",
    "env_files": "pytest-dotenv",
    "env_override_existing_values": "pytest-dotenv",
    "django_settings_module": "pytest-django",
    "django_configuration": "pytest-django",
    "django_find_project": "pytest-django",
    "fail_invalid_template_vars": "pytest-django",
    "mock_use_standalone_module": "pytest-mock",
    "mock_traceback_monkeypatch": "pytest-mock",
    "qt_api": "pytest-qt",
    "qt_log_level_fail": "pytest-qt",
    "looponfailroots": "pytest-xdist",
    "rsyncdirs": "pytest-xdist",
    "rsyncignore": "pytest-xdist",
    "reruns": "pytest-rerunfailures",
    "reruns_delay": "pytest-rerunfailures",
    "trio_mode": "pytest-trio",
    "flake8-ignore": "pytest-flake8",
    "flake8-max-line-length": "pytest-flake8",
    "doctest_plus": "pytest-doctestplus",
    "doctest_rst": "pytest-doctestplus",
    "text_file_format": "pytest-doctestplus",
    "remote_data_strict": "pytest-remotedata",
    "mpl-baseline-path": "pytest-mpl",
    "mpl-results-path": "pytest-mpl",
    "bdd_features_base_dir": "pytest-bdd",
    "base_url": "pytest-base-url",
    "render_collapsed": "pytest-html",
    "python_paths": "pytest-pythonpath",
}

#: Modules named by ``-p MODULE`` that are plugins of a distribution with another name.
PLUGIN_MODULES: Mapping[str, str] = {
    "xdist": "pytest-xdist",
    "xdist.plugin": "pytest-xdist",
    "pytest_cov": "pytest-cov",
    "pytest_mock": "pytest-mock",
    "pytest_asyncio": "pytest-asyncio",
    "pytest_timeout": "pytest-timeout",
    "pytest_randomly": "pytest-randomly",
    "pytest_rerunfailures": "pytest-rerunfailures",
    "pytest_benchmark": "pytest-benchmark",
    "pytest_django": "pytest-django",
    "pytest_env": "pytest-env",
    "pytest_socket": "pytest-socket",
    "pytest_subtests": "pytest-subtests",
}


def option_plugin(option: str) -> str | None:
    """The plugin adding the command-line ``option`` (``--cov-report=term`` counts as ``--cov-report``)."""
    name = option.split("=", 1)[0]
    return next((plugin for pattern, plugin in OPTION_PLUGINS if pattern.fullmatch(name)), None)


def ini_plugin(key: str) -> str | None:
    """The plugin reading the configuration ``key``, in any case."""
    return INI_PLUGINS.get(key.lower())
