"""The Python half of a Rust server: a plain Pyro5 client of `cargo run --example greeting_server`.

Run, each in its own terminal (Python with `pip install Pyro5`):

    cargo run -p rmi-cli --bin rmi-ns
    cargo run --example greeting_server
    python examples/python/client.py Rashmi

The name server is found as Pyro always finds it (PYRO_NS_HOST / PYRO_NS_PORT, or a broadcast);
nothing here knows the server is written in Rust.
"""
import sys

import Pyro5.api
import Pyro5.errors

name = sys.argv[1] if len(sys.argv) > 1 else input("What is your name? ").strip()
server = Pyro5.api.Proxy("PYRONAME:server")
print(server.welcomeMessage(name))
try:
    Pyro5.api.Proxy("PYRONAME:no.such.server").welcomeMessage(name)
except Pyro5.errors.NamingError as e:
    print("NamingError:", e)
