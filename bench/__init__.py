# The notifd benchmark (issue 6); see bench/README.md. Not part of the test suite.
