"""The example plugins' tests run against a real notifd with the suite's harness."""
from tests.integration.conftest import daemon, db_path, notifctl, report  # noqa: F401 (fixtures)
