pytest_plugins = [
    "tests.support.services",
    "tests.support.sshd",
    "tests.support.notes_app",
]
