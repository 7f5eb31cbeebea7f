pytest_plugins = [
    "tests.support.services",
    "tests.support.postgres",
    "tests.support.gitrepo",
    "tests.support.sshd",
    "tests.support.notes_app",
    "tests.support.deploy_env",
    "tests.support.nshosts",
    "tests.support.multihost",
    "tests.support.openbao",
    "tests.support.proxy_env",
    "tests.support.backup_env",
    "tests.support.swarm_env",
]

# Fixtures that start or need a real service (Docker Engine, registry, sshd, PostgreSQL):
# a test using any of them is an integration test, so `pytest -m "not integration"` runs
# only the fast ones, whatever marker the test itself carries.
SERVICE_FIXTURES = frozenset({
    "auth_registry", "deploy_dir", "fleet", "local_deploy_dir", "notes_builds",
    "notes_database", "notes_image", "openbao", "pg_admin", "pg_connect", "pg_url",
    "plainsail_wheel", "proxy_apps", "caddy_image", "current_caddy_image",
    "pgclient_image", "pg_on_bridge",
    "ns_hosts", "registry", "service_repo", "ssh_host", "tiny_app", "fresh_host", "fault_host",
    "swarm_cluster",
})


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    import pytest

    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
