pytest_plugins = [
    "tests.support.services",
    "tests.support.postgres",
    "tests.support.gitrepo",
    "tests.support.sshd",
    "tests.support.notes_app",
    "tests.support.deploy_env",
    "tests.support.multihost",
]
