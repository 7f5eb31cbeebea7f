pytest_plugins = [
    "tests.support.services",
    "tests.support.gitrepo",
    "tests.support.sshd",
    "tests.support.notes_app",
    "tests.support.deploy_env",
]
