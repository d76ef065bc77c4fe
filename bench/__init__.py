# The notifd benchmark; see bench/README.md. Not part of the test suite.
