"""Log a line every `interval` seconds while notifd runs: a plugin with a life of its own."""
from notifd import ConfigError, hookimpl

_running = {}  # plugin name -> its LoopingCall, from startup to shutdown


@hookimpl
def startup(context):
    from twisted.internet import task

    interval = context.settings.get("interval", 60)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise ConfigError(f"interval: expected seconds > 0, got {interval!r}")
    loop = task.LoopingCall(context.log.info, "still here (state in {state_dir})", state_dir=str(context.state_dir))
    loop.clock = context.reactor  # the daemon's reactor: a test gives a task.Clock
    _running[context.name] = loop
    loop.start(interval)


@hookimpl
def shutdown(context):
    loop = _running.pop(context.name, None)
    if loop is not None and loop.running:
        loop.stop()
