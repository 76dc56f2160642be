//! Remote errors in Pyro's shape, for the Pyro formats: the exception dict a Python peer raises
//! (`{'__class__', '__exception__', 'args', 'attributes': {'_pyroTraceback': [...]}}`), and back.
//!
//! The Rust error chain travels as the remote traceback. Classes Python cannot rebuild (rmi's
//! own, such as `rmi.Panic`, and an application's, such as `myapp.Overdrawn`) go as
//! `builtins.RuntimeError` with the original class in the message, unless the daemon was told
//! its Python clients rebuild them (`DaemonBuilder::exception_classes`); the error's kind and
//! class ride along in attributes, so an rmi peer restores both.

use serde::ser::{Serialize, SerializeMap, SerializeTuple, Serializer};

use super::value::{Repr, Value};
use crate::error::{PythonParts, RemoteError, RemoteErrorKind};

/// Attribute carrying the error's [`RemoteErrorKind`] for rmi peers.
const KIND_ATTRIBUTE: &str = "_rmiKind";
/// Attribute carrying the object and method the call addressed.
const CALL_ATTRIBUTE: &str = "_rmiCall";
/// Attribute carrying the class of an error sent as `builtins.RuntimeError`.
const CLASS_ATTRIBUTE: &str = "_rmiClass";

/// Builtin exceptions whose constructor takes fixed arguments: rebuilt from the one message
/// rmi keeps (`UnicodeDecodeError("('utf-8', …)")`), Python's deserializer raises `TypeError`
/// instead of the error (a Python daemon's, relayed by an rmi method).
const FIXED_ARGUMENTS: &[&str] = &[
    "builtins.UnicodeDecodeError",
    "builtins.UnicodeEncodeError",
    "builtins.UnicodeTranslateError",
    "builtins.ExceptionGroup",
    "builtins.BaseExceptionGroup",
];

/// True for a class a Python Pyro peer can rebuild into an exception from one message.
fn rebuildable(class: &str) -> bool {
    ["builtins.", "Pyro5.errors.", "Pyro4.errors."]
        .iter()
        .any(|prefix| class.starts_with(prefix))
        && !class.contains("__")
        && !FIXED_ARGUMENTS.contains(&class)
}

/// True for an error that goes to Python under its own class: one Python rebuilds, or one
/// the daemon was told its clients rebuild (Pyro asks a client's registered converters before
/// it refuses a name with `__`, such as `__main__.Overdrawn`).
fn sent_as_is(err: &RemoteError) -> bool {
    rebuildable(&err.type_name) || (err.keep_class && !err.type_name.is_empty())
}

/// Attributes Pyro and rmi put on every exception they send, rebuilt from the error itself.
const OWN_ATTRIBUTES: &[&str] = &[
    "_pyroTraceback",
    KIND_ATTRIBUTE,
    CALL_ATTRIBUTE,
    CLASS_ATTRIBUTE,
];

/// What a Python peer's exception carried besides its message, kept in
/// [`RemoteError::python`]: its arguments (`ValueError('bad', 42)`, `OSError(2, 'No such
/// file')`) and its own attributes (`e.account = 7`), sent on as they came while the error's
/// class and message are still the ones they came with.
struct Kept {
    class: String,
    message: String,
    args: Vec<Value>,
    attributes: Vec<(Value, Value)>,
}

/// The arguments and attributes `err` came with, unless it was given another class or message
/// since.
fn kept(err: &RemoteError) -> Option<&Kept> {
    let kept = err.python.as_ref()?.0.downcast_ref::<Kept>()?;
    (kept.class == err.type_name && kept.message == err.message).then_some(kept)
}

/// A remote error as Pyro's exception dict.
pub(super) struct PyroException<'a>(pub(super) &'a RemoteError);

impl Serialize for PyroException<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let err = self.0;
        let (class, message) = if sent_as_is(err) {
            // A Pyro4 error relayed (a Pyro4 name server's `NamingError`, say) goes by Pyro5's
            // name, which Pyro5 rebuilds (it refuses Pyro4's, and drops its connection for
            // that); every Pyro4 error class has its Pyro5 namesake, and a Pyro4 peer gets
            // its own name back where Pyro5 classes are renamed for it.
            let class = match err.type_name.strip_prefix("Pyro4.errors.") {
                Some(rest) => format!("Pyro5.errors.{rest}"),
                None => err.type_name.clone(),
            };
            (class, err.message.clone())
        } else {
            (
                "builtins.RuntimeError".to_owned(),
                format!("{}: {}", err.type_name, err.message),
            )
        };
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("__class__", &class)?;
        map.serialize_entry("__exception__", &true)?;
        // (Only as the conversion from `io::Error` made it: a message given context since, or
        // another class, goes as it is.)
        let os_error = err.os_error.filter(|&code| {
            sent_as_is(err) && err.message == std::io::Error::from_raw_os_error(code).to_string()
        });
        match (os_error, kept(err).filter(|_| sent_as_is(err))) {
            // As Python's own `OSError(errno, strerror)`: `e.errno`, `e.strerror`, and its text
            // `[Errno 2] No such file or directory`.
            (Some(code), _) => map.serialize_entry("args", &(code, strerror(code)))?,
            (None, Some(kept)) => map.serialize_entry("args", &Args(&kept.args))?,
            (None, None) => map.serialize_entry("args", &OneTuple(&message))?,
        }
        map.serialize_entry("attributes", &Attributes(err))?;
        map.end()
    }
}

/// The operating system's text for error number `code` (Rust's, less its ` (os error N)`).
fn strerror(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// An exception's arguments as they came: a tuple, as Python's `args` is.
struct Args<'a>(&'a [Value]);

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for arg in self.0 {
            t.serialize_element(arg)?;
        }
        t.end()
    }
}

struct OneTuple<'a>(&'a str);

impl Serialize for OneTuple<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(1)?;
        t.serialize_element(self.0)?;
        t.end()
    }
}

struct Attributes<'a>(&'a RemoteError);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let err = self.0;
        let mut traceback = vec![format!(
            "rmi remote error ({}): {}\n",
            err.type_name, err.message
        )];
        traceback.extend(err.chain.iter().map(|c| format!("  caused by: {c}\n")));
        let renamed = !sent_as_is(err);
        let own = kept(err).map_or(&[][..], |kept| &kept.attributes[..]);
        let mut map = s.serialize_map(Some(3 + usize::from(renamed) + own.len()))?;
        map.serialize_entry("_pyroTraceback", &traceback)?;
        map.serialize_entry(KIND_ATTRIBUTE, &err.kind)?;
        map.serialize_entry(CALL_ATTRIBUTE, &(&err.object, &err.method))?;
        if renamed {
            map.serialize_entry(CLASS_ATTRIBUTE, &err.type_name)?;
        }
        // The exception's own attributes, which Pyro sets on the exception it rebuilds (on a
        // `RuntimeError` standing for a class Python cannot rebuild as well).
        for (name, value) in own {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The kind of an exception a Python peer raised (it sends no rmi kind): a name server's
/// `NamingError` is a naming failure and `StopIteration` ends a stream, whichever Pyro sent it
/// (Pyro4 on Python 2 names the builtins `exceptions.`).
fn python_kind(class: &str) -> RemoteErrorKind {
    match class {
        "Pyro5.errors.NamingError" | "Pyro4.errors.NamingError" => RemoteErrorKind::Resolve,
        "builtins.StopIteration" | "exceptions.StopIteration" => RemoteErrorKind::StopIteration,
        _ => RemoteErrorKind::Other,
    }
}

/// The exception's message as Python's `str(exc)` reads it: its one argument (a str as is,
/// anything else as its `repr`), the `repr` of its arguments' tuple when there are several,
/// and `[Errno N] text` for the `OSError` family.
fn python_message(class: &str, args: &[Value]) -> String {
    const OS_ERRORS: &[&str] = &[
        "OSError",
        "IOError",
        "EnvironmentError",
        "BlockingIOError",
        "ChildProcessError",
        "ConnectionError",
        "BrokenPipeError",
        "ConnectionAbortedError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "FileExistsError",
        "FileNotFoundError",
        "InterruptedError",
        "IsADirectoryError",
        "NotADirectoryError",
        "PermissionError",
        "ProcessLookupError",
        "TimeoutError",
    ];
    let builtin = class
        .strip_prefix("builtins.")
        .or_else(|| class.strip_prefix("exceptions."));
    match args {
        [] => String::new(),
        [Value::Str(s)] => s.clone(),
        [errno @ Value::Int(_), Value::Str(text)]
            if builtin.is_some_and(|name| OS_ERRORS.contains(&name)) =>
        {
            format!("[Errno {}] {text}", Repr(errno))
        }
        [one] => Repr(one).to_string(),
        _ => Repr(&Value::Tuple(args.to_vec())).to_string(),
    }
}

/// A remote error from Pyro's exception dict (a Python peer's, or an rmi peer's).
#[cfg(test)]
pub(super) fn from_value(value: Value) -> Option<RemoteError> {
    from_peer(value, true)
}

/// A remote error from Pyro's exception dict, sent by an rmi daemon (`rmi_peer`: it answered
/// the serializer offer, or proved the shared secret) or by another peer. Only an rmi daemon's
/// kind (`_rmiKind`) is believed: a Python daemon relaying an rmi backend's exception passes
/// its attributes on (Pyro copies them all), and a kind such as `BadArguments` would tell the
/// caller that a call that ran did not (helper-168 #1). The attributes are moved, not copied.
pub(super) fn from_peer(mut value: Value, rmi_peer: bool) -> Option<RemoteError> {
    let Some(Value::Str(mut class)) = take(&mut value, "__class__") else {
        return None;
    };
    let args = match take(&mut value, "args") {
        Some(Value::Tuple(a) | Value::List(a)) => a,
        _ => Vec::new(),
    };
    let mut message = python_message(&class, &args);
    let (ours, own): (Vec<_>, Vec<_>) = match take(&mut value, "attributes") {
        Some(Value::Dict(entries)) => entries
            .into_iter()
            .partition(|(k, _)| matches!(k, Value::Str(s) if OWN_ATTRIBUTES.contains(&s.as_str()))),
        _ => (Vec::new(), Vec::new()),
    };
    let ours = Value::Dict(ours);
    let attributes = Some(&ours);
    // An rmi peer's error sent as RuntimeError("class: message"): its own class again.
    if let Some(Value::Str(original)) = attributes.and_then(|a| a.get(CLASS_ATTRIBUTE)) {
        let prefix = format!("{original}: ");
        if class == "builtins.RuntimeError" && message.starts_with(&prefix) {
            message.drain(..prefix.len());
            class = original.clone();
        }
    }
    let kind = attributes
        .filter(|_| rmi_peer)
        .and_then(|a| a.get(KIND_ATTRIBUTE))
        .and_then(|k| serde::Deserialize::deserialize(k.clone()).ok())
        .unwrap_or_else(|| python_kind(&class));
    let chain = match attributes.and_then(|a| a.get("_pyroTraceback")) {
        Some(Value::List(lines) | Value::Tuple(lines)) => lines
            .iter()
            .filter_map(|l| match l {
                Value::Str(s) => Some(s.trim_end().to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut err = RemoteError::new(kind, class, message);
    err.chain = chain;
    if let Some(Value::Tuple(call) | Value::List(call)) =
        attributes.and_then(|a| a.get(CALL_ATTRIBUTE))
    {
        let text = |v: Option<&Value>| match v {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        err.object = text(call.first());
        err.method = text(call.get(1));
    }
    // Kept only where there is more than the message: an rmi peer's error (its message as its
    // one argument, no attributes of its own) costs nothing more.
    if !own.is_empty() || !matches!(args.as_slice(), [] | [Value::Str(_)]) {
        let kept = Kept {
            class: err.type_name.clone(),
            message: err.message.clone(),
            args,
            attributes: own,
        };
        err.python = Some(PythonParts(std::sync::Arc::new(kept)));
    }
    Some(err)
}

/// The value of key `name` in a dict, taken out of it (the first, as [`Value::get`] reads).
fn take(dict: &mut Value, name: &str) -> Option<Value> {
    let Value::Dict(entries) = dict else {
        return None;
    };
    let (_, value) = entries
        .iter_mut()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == name))?;
    Some(std::mem::replace(value, Value::None))
}

/// A failed call in a batch's results: Pyro's `_ExceptionWrapper` around the exception dict
/// (`Pyro5.core._ExceptionWrapper`; Pyro4's is `Pyro4.futures._ExceptionWrapper`).
pub(super) struct ExceptionWrapper<'a> {
    pub(super) err: &'a RemoteError,
    pub(super) pyro4: bool,
}

impl Serialize for ExceptionWrapper<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let class = if self.pyro4 {
            "Pyro4.futures._ExceptionWrapper"
        } else {
            "Pyro5.core._ExceptionWrapper"
        };
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("__class__", class)?;
        map.serialize_entry("exception", &PyroException(self.err))?;
        map.end()
    }
}

/// The error inside one result of a Pyro-format batch reply, if it is an `_ExceptionWrapper`.
pub(super) fn from_wrapper(value: &Value, rmi_peer: bool) -> Option<RemoteError> {
    match value.get("__class__") {
        Some(Value::Str(c)) if c.ends_with("._ExceptionWrapper") => {
            from_peer(value.get("exception")?.clone(), rmi_peer)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Python peer's exception dict, as Pyro's serializers write one (no rmi attributes).
    fn python_exception(class: &str, message: &str) -> Value {
        let s = |t: &str| Value::Str(t.into());
        Value::Dict(vec![
            (s("__class__"), s(class)),
            (s("__exception__"), Value::Bool(true)),
            (s("args"), Value::Tuple(vec![s(message)])),
            (s("attributes"), Value::Dict(vec![])),
        ])
    }

    /// An OS error goes as `OSError(errno, strerror)`, read back as Python's text; one whose
    /// message was given context since goes with that message.
    #[test]
    fn an_os_error_goes_with_its_errno_unless_its_message_was_changed() {
        let limits = crate::protocol::codec::DecodeLimits::default();
        let args_of = |err: &RemoteError| {
            let doc = super::super::serpent::encode_in(&PyroException(err), false).unwrap();
            let value: Value = super::super::serpent::decode(&doc, &limits).unwrap();
            match value.get("args") {
                Some(Value::Tuple(items) | Value::List(items)) => items.clone(),
                other => panic!("{other:?}"),
            }
        };
        let mut err = RemoteError::from(std::io::Error::from_raw_os_error(2));
        let strerror = Value::Str("No such file or directory".into());
        assert_eq!(args_of(&err), [Value::Int(2), strerror]);
        err.message = format!("reading notes.txt: {}", err.message);
        assert_eq!(args_of(&err), [Value::Str(err.message.clone())]);
    }

    #[test]
    fn a_python_peers_naming_error_and_stop_iteration_keep_their_meaning() {
        for (class, kind) in [
            ("Pyro5.errors.NamingError", RemoteErrorKind::Resolve),
            ("Pyro4.errors.NamingError", RemoteErrorKind::Resolve),
            ("builtins.StopIteration", RemoteErrorKind::StopIteration),
            // Pyro4 on Python 2: a stream's end was an error (helper-110 #6).
            ("exceptions.StopIteration", RemoteErrorKind::StopIteration),
            ("builtins.ValueError", RemoteErrorKind::Other),
            ("Pyro5.errors.CommunicationError", RemoteErrorKind::Other),
        ] {
            let err = from_value(python_exception(class, "why")).unwrap();
            assert_eq!((err.kind, err.type_name.as_str()), (kind, class));
            assert_eq!(err.message, "why");
        }
    }

    #[test]
    fn a_message_reads_as_pythons_str_of_the_exception() {
        let s = |t: &str| Value::Str(t.into());
        let with_args = |class: &str, args: Vec<Value>| {
            Value::Dict(vec![
                (s("__class__"), s(class)),
                (s("__exception__"), Value::Bool(true)),
                (s("args"), Value::Tuple(args)),
                (s("attributes"), Value::Dict(vec![])),
            ])
        };
        for (class, args, message) in [
            (
                "builtins.FileNotFoundError",
                vec![Value::Int(2), s("No such file or directory")],
                "[Errno 2] No such file or directory",
            ),
            ("builtins.KeyError", vec![Value::Int(42)], "42"),
            (
                "builtins.ValueError",
                vec![s("bad"), Value::Float(3.5)],
                "('bad', 3.5)",
            ),
            (
                "builtins.ValueError",
                vec![Value::Int(2), s("x")],
                "(2, 'x')",
            ),
            ("builtins.RuntimeError", vec![], ""),
            ("builtins.KeyError", vec![s("k")], "k"),
        ] {
            let err = from_value(with_args(class, args)).unwrap();
            assert_eq!(err.message, message, "{class}");
        }
    }

    /// A Python peer's exception, relayed, goes on with the arguments and attributes it came
    /// with; one given another message since goes with that message alone.
    #[test]
    fn a_relayed_python_exception_keeps_its_arguments_and_attributes() {
        let limits = crate::protocol::codec::DecodeLimits::default();
        let s = |t: &str| Value::Str(t.into());
        let sent = |err: &RemoteError| -> Value {
            let doc = super::super::serpent::encode_in(&PyroException(err), false).unwrap();
            super::super::serpent::decode(&doc, &limits).unwrap()
        };
        let came = Value::Dict(vec![
            (s("__class__"), s("builtins.ValueError")),
            (s("__exception__"), Value::Bool(true)),
            (s("args"), Value::Tuple(vec![s("bad"), Value::Int(42)])),
            (
                s("attributes"),
                Value::Dict(vec![
                    (s("_pyroTraceback"), Value::List(vec![s("Traceback\n")])),
                    (s("account"), Value::Int(7)),
                ]),
            ),
        ]);
        let args = |value: &Value| match value.get("args") {
            Some(Value::Tuple(items) | Value::List(items)) => items.clone(),
            other => panic!("{other:?}"),
        };
        let mut err = from_value(came).unwrap();
        assert_eq!(err.message, "('bad', 42)");
        let value = sent(&err);
        assert_eq!(args(&value), [s("bad"), Value::Int(42)]);
        let attributes = value.get("attributes").unwrap();
        assert_eq!(attributes.get("account"), Some(&Value::Int(7)));
        // One traceback, rmi's (which holds the chain), not two.
        let Some(Value::Dict(entries)) = value.get("attributes") else {
            panic!("{value:?}")
        };
        let tracebacks = entries
            .iter()
            .filter(|(k, _)| k == &s("_pyroTraceback"))
            .count();
        assert_eq!(tracebacks, 1);
        // Read back by an rmi peer, as before.
        let back = from_value(value).unwrap();
        assert_eq!(
            (back.type_name.as_str(), back.message.as_str()),
            ("builtins.ValueError", "('bad', 42)")
        );
        // An error given another message is that message.
        err.message = "context: ('bad', 42)".into();
        let value = sent(&err);
        assert_eq!(args(&value), [s("context: ('bad', 42)")]);
        assert_eq!(value.get("attributes").unwrap().get("account"), None);
    }

    #[test]
    fn only_pyros_exception_wrappers_are_a_batchs_failed_calls() {
        let s = |t: &str| Value::Str(t.into());
        let wrapper = |class: &str| {
            Value::Dict(vec![
                (s("__class__"), s(class)),
                (
                    s("exception"),
                    python_exception("builtins.ZeroDivisionError", "division by zero"),
                ),
            ])
        };
        for class in [
            "Pyro5.core._ExceptionWrapper",
            "Pyro4.futures._ExceptionWrapper",
        ] {
            let err = from_wrapper(&wrapper(class), true).expect(class);
            assert_eq!(err.type_name, "builtins.ZeroDivisionError");
            assert_eq!(err.message, "division by zero");
        }
        // A result that happens to be a dict, of another class or of none, is a value.
        assert!(from_wrapper(&wrapper("mymodule.Wrapper"), true).is_none());
        assert!(from_wrapper(&python_exception("builtins.ValueError", "x"), true).is_none());
        assert!(from_wrapper(&Value::Dict(vec![(s("exception"), s("x"))]), true).is_none());
        assert!(from_wrapper(&s("Pyro5.core._ExceptionWrapper"), true).is_none());
    }
}
