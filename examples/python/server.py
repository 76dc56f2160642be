"""The Python half of examples/pyro_client.rs: a plain Pyro5 server, registered in a name server.

Run, each in its own terminal (Python with `pip install Pyro5`):

    python -m Pyro5.nameserver          # or: cargo run -p rmi-cli --bin rmi-ns
    python examples/python/server.py
    cargo run --example pyro_client

Nothing in it knows about Rust; with Pyro4, replace Pyro5.api by Pyro4 and locate_ns by locateNS
(and use `python -m Pyro4.naming`): the Rust client finds out by itself.
"""
import Pyro5.api


@Pyro5.api.expose
class GreetingMaker(object):
    def welcomeMessage(self, name):
        return "Hi welcome " + name

    def divide(self, a, b):
        return a / b


daemon = Pyro5.api.Daemon()
uri = daemon.register(GreetingMaker)
Pyro5.api.locate_ns().register("example.python.greeter", uri)
print("Ready. Object uri =", uri)
daemon.requestLoop()
