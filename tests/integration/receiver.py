"""The far end of a webhook: notifd.testing's HTTP receiver, under the name the suite uses."""
from notifd.testing import HttpReceiver as Receiver, Request  # noqa: F401
