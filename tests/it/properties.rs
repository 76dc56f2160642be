//! Properties (Pyro's remote attributes): `#[rmi(property)]` and `#[rmi(setter)]` methods are
//! read and set as a Python `@property` is, through `__getattr__` and `__setattr__`, and
//! listed in the metadata's `attrs`; by rmi proxies, and by Python Pyro5 and Pyro4 clients
//! with `proxy.name` and `proxy.name = value`. And Python's special methods (`__len__`,
//! `__getitem__`…), which Pyro 5's proxy sends `len(proxy)`, `proxy[i]` and the like to.

use std::sync::Mutex;

use rmi::{Error, RemoteError, RemoteErrorKind, RemoteStream};

/// A lamp with properties beside a method.
#[rmi::remote]
pub(crate) trait Lamp {
    /// Whether it is on.
    #[rmi(property)]
    async fn on(&self) -> bool;
    /// Turns it on or off.
    #[rmi(setter)]
    async fn set_on(&self, on: bool);
    /// Its brightness, 0 to 100 (Python's name: `brightnessLevel`).
    #[rmi(property, name = "brightnessLevel")]
    async fn brightness(&self) -> u8;
    /// Sets the brightness; over 100 raises `ValueError`.
    #[rmi(setter, name = "brightnessLevel", raises)]
    async fn dim(&self, level: u8) -> Result<(), RemoteError>;
    /// Its serial number: read only.
    #[rmi(property)]
    async fn serial(&self) -> Vec<u8>;
    /// A label, any bytes.
    #[rmi(property)]
    async fn label(&self) -> Vec<u8>;
    /// Sets the label.
    #[rmi(setter)]
    async fn set_label(&self, label: Vec<u8>);
    /// Turns it over; returns whether it is on now.
    async fn toggle(&self) -> bool;
}

struct Bulb(Mutex<(bool, u8)>, Mutex<Vec<u8>>);

impl Lamp for Bulb {
    async fn on(&self) -> bool {
        self.0.lock().unwrap().0
    }
    async fn set_on(&self, on: bool) {
        self.0.lock().unwrap().0 = on;
    }
    async fn brightness(&self) -> u8 {
        self.0.lock().unwrap().1
    }
    async fn dim(&self, level: u8) -> Result<(), RemoteError> {
        if level > 100 {
            return Err(RemoteError::new(
                RemoteErrorKind::Other,
                "builtins.ValueError",
                format!("brightness {level} is over 100"),
            ));
        }
        self.0.lock().unwrap().1 = level;
        Ok(())
    }
    async fn serial(&self) -> Vec<u8> {
        b"L-1\x00\xff".to_vec()
    }
    async fn label(&self) -> Vec<u8> {
        self.1.lock().unwrap().clone()
    }
    async fn set_label(&self, label: Vec<u8>) {
        *self.1.lock().unwrap() = label;
    }
    async fn toggle(&self) -> bool {
        let mut state = self.0.lock().unwrap();
        state.0 = !state.0;
        state.0
    }
}

/// A daemon serving a lamp (off, at 50) as `lab.lamp`.
async fn lamp_daemon() -> (rmi::Daemon, rmi::Uri) {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register_with_id(
            LampServer::new(Bulb(Mutex::new((false, 50)), Mutex::default())),
            "lab.lamp",
        )
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    (daemon, uri)
}

fn attribute_error(err: &Error) -> bool {
    matches!(err, Error::Remote(e) if e.type_name == "builtins.AttributeError"
        && e.message.contains("unexposed or unknown remote attribute"))
}

#[tokio::test]
async fn a_rust_proxy_reads_and_sets_properties() {
    let (daemon, uri) = lamp_daemon().await;
    let lamp = LampProxy::connect(&uri).await.unwrap();
    assert!(!lamp.on().await.unwrap());
    lamp.set_on(true).await.unwrap();
    assert!(lamp.on().await.unwrap());
    assert!(
        !lamp.toggle().await.unwrap(),
        "the method sees what the setter set"
    );
    lamp.dim(80).await.unwrap();
    assert_eq!(lamp.brightness().await.unwrap(), 80);
    match lamp.dim(101).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.type_name, "builtins.ValueError");
            assert_eq!(e.message, "brightness 101 is over 100");
        }
        other => panic!("expected a ValueError, got {other:?}"),
    }
    assert_eq!(lamp.brightness().await.unwrap(), 80);
    assert_eq!(lamp.serial().await.unwrap(), b"L-1\x00\xff");
    // A `Vec<u8>` setter: small, and 2 MiB (which crosses apart from the frame's other bytes),
    // under bincode and msgpack.
    let big: Vec<u8> = (0..2 << 20).map(|i| (i % 251) as u8).collect();
    let msgpack = LampProxy::builder(&uri)
        .unwrap()
        .serializer(rmi::Serializer::MsgPack)
        .connect::<LampProxy>()
        .await
        .unwrap();
    for proxy in [&lamp, &msgpack] {
        proxy.set_label(vec![0, 1, 255]).await.unwrap();
        assert_eq!(proxy.label().await.unwrap(), [0, 1, 255]);
        proxy.set_label(big.clone()).await.unwrap();
        assert!(proxy.label().await.unwrap() == big);
    }

    // The metadata lists properties apart from methods.
    let meta = lamp.proxy().metadata().await.unwrap();
    let mut attrs = meta.attrs.clone();
    attrs.sort();
    assert_eq!(attrs, ["brightnessLevel", "label", "on", "serial"]);
    assert!(meta.methods.contains(&"toggle".to_owned()), "{meta:?}");
    assert!(
        !meta.methods.iter().any(|m| attrs.contains(m)),
        "a property is not a method: {meta:?}"
    );

    // What Pyro refuses, refused the same way; the connection goes on.
    let proxy = lamp.proxy();
    let err = proxy
        .call::<_, bool>("__getattr__", &("nope",))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote(e)
            if e.message == "attempt to access unexposed or unknown remote attribute 'nope'"),
        "Pyro's words: {err:?}"
    );
    let err = proxy
        .call::<_, ()>("__setattr__", &("serial", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(attribute_error(&err), "a read-only property: {err:?}");
    let err = proxy
        .call::<_, ()>("__setattr__", &("on", "yes"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadArguments(e) if e.type_name == "builtins.TypeError"),
        "a value of the wrong type: {err:?}"
    );
    let err = proxy.call::<_, bool>("on", &[(); 0]).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownMethod { method, .. } if method == "on"),
        "a property is not called as a method: {err:?}"
    );
    assert_eq!(lamp.brightness().await.unwrap(), 80);

    // The blocking proxy too.
    let blocking = tokio::task::spawn_blocking({
        let uri = uri.clone();
        move || {
            let lamp = LampBlockingProxy::connect(&uri).unwrap();
            lamp.dim(7).unwrap();
            lamp.brightness().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(blocking, 7);

    // An object without properties answers as Pyro does too, not as for an unknown method.
    let greeter = daemon
        .register(crate::support::GreeterServer::new(
            crate::support::GreetingMaker,
        ))
        .unwrap();
    let err = rmi::proxy_builder(&greeter)
        .unwrap()
        .build()
        .call::<_, String>("__getattr__", &("name",))
        .await
        .unwrap_err();
    assert!(attribute_error(&err), "{err:?}");
    daemon.shutdown();
}

/// Python's own spelling: `lamp.on`, `lamp.on = True`, `lamp.brightnessLevel = 101`.
const PYTHON_LAMP: &str = r#"
import sys
import serpent
pyro = sys.argv[2]
if pyro == "5":
    import Pyro5.api as api
else:
    import Pyro4 as api
# (Pyro's own marshal serializer cannot send `__getattr__` or `__setattr__`: their kwargs are
# None, which it cannot take.)
serializers = ("serpent", "msgpack", "json")
for serializer in serializers:
    if pyro == "5":
        api.config.SERIALIZER = serializer
    else:
        api.config.SERIALIZER = serializer
        api.config.SERIALIZERS_ACCEPTED.add(serializer)
    with api.Proxy(sys.argv[1]) as lamp:
        lamp.on = False
        lamp.brightnessLevel = 50
        before = (lamp.on, lamp.brightnessLevel)
        lamp.on = True
        lamp.brightnessLevel = 80
        after = (lamp.on, lamp.brightnessLevel, lamp.toggle(), lamp.on)
        try:
            lamp.brightnessLevel = 101
            over = "set"
        except ValueError as e:
            over = "ValueError: %s" % e
        # (Refused by the Python proxy itself: `nope` is not in the metadata's attrs.)
        try:
            lamp.nope
            local = "read"
        except AttributeError:
            local = "AttributeError"
        # (Pyro's json cannot send bytes.)
        if serializer != "json":
            lamp.label = b"\x00py\xff"
            # (serpent gives bytes as its base64 dict: `serpent.tobytes` reads it.)
            raw = lambda b: serpent.tobytes(b) if isinstance(b, dict) else b
            labels = (raw(lamp.label) == b"\x00py\xff", raw(lamp.serial) == b"L-1\x00\xff")
        else:
            labels = (True, True)
        print(serializer, before, after, over, local, labels, sorted(lamp._pyroAttrs), "toggle" in lamp._pyroMethods)
"#;

async fn python_client(python: &'static std::path::Path, pyro: &'static str) {
    let (daemon, uri) = lamp_daemon().await;
    let uri = uri.to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::python::run_python(&python.to_path_buf(), PYTHON_LAMP, &[&uri, pyro])
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in lines {
        assert!(
            line.ends_with(
                "(False, 50) (True, 80, False, False) ValueError: brightness 101 is over 100 \
                 AttributeError (True, True) ['brightnessLevel', 'label', 'on', 'serial'] True"
            ),
            "{line}"
        );
    }
    daemon.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pyro5_client_reads_and_sets_rust_properties() {
    let Some(python) = crate::python::python() else {
        return;
    };
    python_client(python, "5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pyro4_client_reads_and_sets_rust_properties() {
    let Some(python) = crate::pyro4::python() else {
        return;
    };
    python_client(python, "4").await;
}

/// A list of strings behind Python's container protocol.
#[rmi::remote]
pub(crate) trait Shelf {
    /// `len(shelf)`.
    #[rmi(name = "__len__")]
    async fn len(&self) -> usize;
    /// `shelf[i]` (negative from the end); `IndexError` out of range.
    #[rmi(name = "__getitem__", raises)]
    async fn get(&self, index: i64) -> Result<String, RemoteError>;
    /// `shelf[i] = value`.
    #[rmi(name = "__setitem__", raises)]
    async fn put(&self, index: i64, value: String) -> Result<(), RemoteError>;
    /// `del shelf[i]`.
    #[rmi(name = "__delitem__", raises)]
    async fn remove(&self, index: i64) -> Result<(), RemoteError>;
    /// `for x in shelf`.
    #[rmi(name = "__iter__")]
    async fn items(&self) -> RemoteStream<String>;
}

struct Books(Mutex<Vec<String>>);

impl Books {
    /// The position `index` names, as Python reads it; `IndexError` out of range.
    fn at(&self, index: i64) -> Result<usize, Box<RemoteError>> {
        let len = self.0.lock().unwrap().len() as i64;
        let at = if index < 0 { len + index } else { index };
        if (0..len).contains(&at) {
            Ok(at as usize)
        } else {
            Err(Box::new(RemoteError::new(
                RemoteErrorKind::Other,
                "builtins.IndexError",
                "list index out of range",
            )))
        }
    }
}

impl Shelf for Books {
    async fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    async fn get(&self, index: i64) -> Result<String, RemoteError> {
        let at = self.at(index).map_err(|e| *e)?;
        Ok(self.0.lock().unwrap()[at].clone())
    }
    async fn put(&self, index: i64, value: String) -> Result<(), RemoteError> {
        let at = self.at(index).map_err(|e| *e)?;
        self.0.lock().unwrap()[at] = value;
        Ok(())
    }
    async fn remove(&self, index: i64) -> Result<(), RemoteError> {
        let at = self.at(index).map_err(|e| *e)?;
        self.0.lock().unwrap().remove(at);
        Ok(())
    }
    async fn items(&self) -> RemoteStream<String> {
        RemoteStream::iter(self.0.lock().unwrap().clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_s_container_protocol_reaches_rust_special_methods() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let shelves: Vec<String> = ["serpent", "msgpack", "rust"]
        .iter()
        .map(|serializer| {
            let books = ["a", "b", "c"].map(String::from).to_vec();
            let object = ShelfServer::new(Books(Mutex::new(books)));
            let id = format!("lab.shelf.{serializer}");
            daemon.register_with_id(object, &id).unwrap().to_string()
        })
        .collect();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    // From Rust, they are methods like any other.
    let shelf = ShelfProxy::connect(shelves[2].as_str()).await.unwrap();
    assert_eq!(shelf.len().await.unwrap(), 3);
    assert_eq!(shelf.get(-1).await.unwrap(), "c");
    shelf.remove(0).await.unwrap();
    use futures_util::StreamExt;
    let items: Vec<String> = shelf
        .items()
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, ["b", "c"]);
    let Some(python) = crate::python::python() else {
        return;
    };
    const CALLER: &str = r#"
import sys
import Pyro5.api
for serializer, uri in zip(("serpent", "msgpack"), sys.argv[1:]):
    Pyro5.config.SERIALIZER = serializer
    with Pyro5.api.Proxy(uri) as shelf:
        first = (len(shelf), shelf[0], shelf[-1], list(shelf))
        shelf[1] = "b2"
        del shelf[0]
        second = (len(shelf), list(shelf), "b2" in shelf, [x for x in shelf])
        try:
            shelf[10]
            third = "found"
        except IndexError as e:
            third = "IndexError: %s" % e
        print(serializer, first, second, third)
"#;
    let args = shelves.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::python::run_python(python, CALLER, &[&args[0], &args[1]])
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, serializer) in lines.iter().zip(["serpent", "msgpack"]) {
        assert_eq!(
            *line,
            format!(
                "{serializer} (3, 'a', 'c', ['a', 'b', 'c']) (2, ['b2', 'c'], True, ['b2', 'c']) \
                 IndexError: list index out of range"
            ),
            "{out}"
        );
    }
    daemon.shutdown();
}

/// A property renamed for Python, with its setter named after the getter's Rust name.
#[rmi::remote]
pub(crate) trait Dimmer {
    /// The level (Python's name: `brightnessLevel`).
    #[rmi(property, name = "brightnessLevel")]
    async fn brightness_level(&self) -> u8;
    /// Sets the level: the same property, though its own name is not given.
    #[rmi(setter)]
    async fn set_brightness_level(&self, level: u8);
}

struct Knob(Mutex<u8>);

impl Dimmer for Knob {
    async fn brightness_level(&self) -> u8 {
        *self.0.lock().unwrap()
    }
    async fn set_brightness_level(&self, level: u8) {
        *self.0.lock().unwrap() = level;
    }
}

/// A setter not named on its own sets its getter's property under the getter's wire name:
/// one property `brightnessLevel`, which `proxy.brightnessLevel = 5` sets. (Before, the setter
/// made a write-only property `brightness_level` of its own, and Python's assignment raised
/// `AttributeError`: helper-122 #2.)
#[tokio::test]
async fn a_setter_sets_its_renamed_getters_property() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(DimmerServer::new(Knob(Mutex::new(1))))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let dimmer = DimmerProxy::connect(&uri).await.unwrap();
    let meta = dimmer.proxy().metadata().await.unwrap();
    assert_eq!(meta.attrs, ["brightnessLevel"]);
    // As a Python client sets it (`proxy.brightnessLevel = 5`), and as the Rust proxy does.
    dimmer
        .proxy()
        .call::<_, ()>("__setattr__", &("brightnessLevel", 5u8))
        .await
        .unwrap();
    assert_eq!(dimmer.brightness_level().await.unwrap(), 5);
    dimmer.set_brightness_level(7).await.unwrap();
    assert_eq!(dimmer.brightness_level().await.unwrap(), 7);
    daemon.shutdown();
}
