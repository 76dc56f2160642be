//! Pyro URIs: `PYRO:obj@host:port`, `PYRONAME:name[@host[:port]]`, `PYROMETA:tag,tag[@host[:port]]`.
//!
//! Parsing and display only; no I/O. The scheme is case-insensitive on input and upper case on
//! output, so `Display` and `FromStr` round-trip.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Default port of the name server (Pyro's `NS_PORT`).
pub const DEFAULT_NS_PORT: u16 = 9090;

/// Where a daemon or name server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A TCP host (name, IPv4 or IPv6 address without brackets) and port.
    Tcp {
        /// Host name or address; IPv6 addresses are stored without brackets.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket path (`./u:/path/to.sock`).
    Unix(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Location::Tcp { host, port } => write!(f, "{host}:{port}"),
            Location::Unix(path) => write!(f, "./u:{path}"),
        }
    }
}

/// A parsed Pyro URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// `PYRO:object@location`: a direct address of one object in one daemon.
    Pyro {
        /// The object id in the daemon.
        object: String,
        /// The daemon's address.
        location: Location,
    },
    /// `PYRONAME:name[@host[:port]]`: an object to be looked up by name in a name server.
    PyroName {
        /// The registered name.
        name: String,
        /// The name server's host and port, if given; otherwise the name server is located.
        ns: Option<(String, u16)>,
    },
    /// `PYROMETA:tag,tag[@host[:port]]`: any object whose metadata has all these tags.
    PyroMeta {
        /// The required metadata tags (at least one).
        tags: Vec<String>,
        /// The name server's host and port, if given.
        ns: Option<(String, u16)>,
    },
}

impl Uri {
    /// A direct `PYRO:` URI for `object` at TCP `host:port`.
    pub fn tcp(object: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Uri::Pyro {
            object: object.into(),
            location: Location::Tcp {
                host: host.into(),
                port,
            },
        }
    }

    /// The object id of a `PYRO:` URI, or `None` for a logical one.
    pub fn object(&self) -> Option<&str> {
        match self {
            Uri::Pyro { object, .. } => Some(object),
            _ => None,
        }
    }

    /// The location of a `PYRO:` URI, or `None` for a logical one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Uri::Pyro { location, .. } => Some(location),
            _ => None,
        }
    }

    /// True for `PYRO:` URIs, which can be dialed without a name server.
    pub fn is_direct(&self) -> bool {
        matches!(self, Uri::Pyro { .. })
    }
}

fn invalid(uri: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `host[:port]` / `[v6][:port]`; the port is required when `need_port`.
fn parse_host_port(uri: &str, text: &str, need_port: bool) -> Result<(String, Option<u16>), Error> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| invalid(uri, "IPv6 address is missing its closing ']'"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p if p.starts_with(':') => Some(&p[1..]),
            _ => return Err(invalid(uri, "unexpected text after the IPv6 address")),
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(invalid(
                    uri,
                    "an IPv6 address must be written in brackets, e.g. [::1]:9090",
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(uri, "the host is empty"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '@' | '/' | '[' | ']'))
    {
        return Err(invalid(
            uri,
            format!("the host {host:?} contains an invalid character"),
        ));
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            invalid(
                uri,
                format!("the port {p:?} is not a number from 0 to 65535"),
            )
        })?),
        None if need_port => return Err(invalid(uri, "the port is missing (expected host:port)")),
        None => None,
    };
    Ok((host.to_owned(), port))
}

fn check_name(uri: &str, what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(invalid(uri, format!("the {what} is empty")));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(invalid(
            uri,
            format!("the {what} {name:?} contains whitespace or '@'"),
        ));
    }
    Ok(())
}

impl FromStr for Uri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let text = s.trim();
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid(s, "missing scheme (expected PYRO:, PYRONAME: or PYROMETA:)"))?;
        // (Compared without case, not upper-cased: that was an allocation per parse.)
        let known = ["PYRO", "PYRONAME", "PYROMETA"]
            .into_iter()
            .find(|known| scheme.eq_ignore_ascii_case(known));
        match known {
            Some("PYRO") => {
                // At the first `@`, as Pyro's pattern splits: an object id has none, and a
                // Unix socket's path may (`./u:/run/app@1/d.sock`).
                let (object, loc) = rest.split_once('@').ok_or_else(|| {
                    invalid(s, "a PYRO: uri needs a location: PYRO:object@host:port")
                })?;
                check_name(s, "object id", object)?;
                let location = if let Some(path) = loc.strip_prefix("./u:") {
                    if path.is_empty() {
                        return Err(invalid(s, "the unix socket path is empty"));
                    }
                    Location::Unix(path.to_owned())
                } else {
                    let (host, port) = parse_host_port(s, loc, true)?;
                    Location::Tcp {
                        host,
                        port: port.expect("port required"),
                    }
                };
                Ok(Uri::Pyro {
                    object: object.to_owned(),
                    location,
                })
            }
            Some(_) => {
                let (what, ns) = match rest.rsplit_once('@') {
                    Some((w, loc)) => {
                        let (host, port) = parse_host_port(s, loc, false)?;
                        (w, Some((host, port.unwrap_or(DEFAULT_NS_PORT))))
                    }
                    None => (rest, None),
                };
                if scheme.eq_ignore_ascii_case("PYRONAME") {
                    check_name(s, "name", what)?;
                    Ok(Uri::PyroName {
                        name: what.to_owned(),
                        ns,
                    })
                } else {
                    let tags: Vec<String> = what.split(',').map(|t| t.trim().to_owned()).collect();
                    for t in &tags {
                        check_name(s, "metadata tag", t)?;
                    }
                    Ok(Uri::PyroMeta { tags, ns })
                }
            }
            None => Err(invalid(
                s,
                format!(
                    "unknown scheme {:?} (expected PYRO, PYRONAME or PYROMETA)",
                    scheme.to_ascii_uppercase()
                ),
            )),
        }
    }
}

fn fmt_ns(f: &mut fmt::Formatter<'_>, ns: &Option<(String, u16)>) -> fmt::Result {
    match ns {
        Some((host, port)) if host.contains(':') => write!(f, "@[{host}]:{port}"),
        Some((host, port)) => write!(f, "@{host}:{port}"),
        None => Ok(()),
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Pyro { object, location } => write!(f, "PYRO:{object}@{location}"),
            Uri::PyroName { name, ns } => {
                write!(f, "PYRONAME:{name}")?;
                fmt_ns(f, ns)
            }
            Uri::PyroMeta { tags, ns } => {
                write!(f, "PYROMETA:{}", tags.join(","))?;
                fmt_ns(f, ns)
            }
        }
    }
}

impl TryFrom<&str> for Uri {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self, Error> {
        text.parse()
    }
}

impl TryFrom<String> for Uri {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl TryFrom<&String> for Uri {
    type Error = Error;

    fn try_from(text: &String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<&Uri> for Uri {
    fn from(uri: &Uri) -> Self {
        uri.clone()
    }
}

/// Anything that names a URI: a [`Uri`], a `&Uri`, or its text. Implemented for every type
/// with a `TryInto<Uri>` (the `TryFrom` impls above), so it adds no conversions of its own;
/// it only gives `connect(uri)`-style functions one readable bound.
pub trait IntoUri {
    /// Converts into a [`Uri`], parsing text.
    fn into_uri(self) -> Result<Uri, Error>;
}

impl<T> IntoUri for T
where
    T: TryInto<Uri>,
    T::Error: Into<Error>,
{
    fn into_uri(self) -> Result<Uri, Error> {
        self.try_into().map_err(Into::into)
    }
}

/// A URI travels as Pyro's `Pyro5.core.URI` class dict in the Pyro formats (those that are
/// `is_human_readable`: serpent, msgpack), so a Python peer receives a URI object:
/// `{'__class__': 'Pyro5.core.URI', 'state': (protocol, object, sockname, host, port)}`.
/// Under bincode it is its string form. Both shapes, and plain strings, are read back.
impl Serialize for Uri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.collect_str(self);
        }
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("__class__", "Pyro5.core.URI")?;
        map.serialize_entry("state", &PyroState(self))?;
        map.end()
    }
}

/// A URI's Pyro state tuple: (protocol, object, sockname, host, port).
struct PyroState<'a>(&'a Uri);

impl Serialize for PyroState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(5)?;
        let ns = |ns: &Option<(String, u16)>| {
            ns.clone().map_or((None, None), |(h, p)| (Some(h), Some(p)))
        };
        match self.0 {
            Uri::Pyro { object, location } => {
                t.serialize_element("PYRO")?;
                t.serialize_element(object)?;
                match location {
                    Location::Tcp { host, port } => {
                        t.serialize_element(&None::<String>)?;
                        t.serialize_element(host)?;
                        t.serialize_element(port)?;
                    }
                    Location::Unix(path) => {
                        t.serialize_element(path)?;
                        t.serialize_element(&None::<String>)?;
                        t.serialize_element(&None::<u16>)?;
                    }
                }
            }
            Uri::PyroName { name, ns: at } => {
                let (host, port) = ns(at);
                t.serialize_element("PYRONAME")?;
                t.serialize_element(name)?;
                t.serialize_element(&None::<String>)?;
                t.serialize_element(&host)?;
                t.serialize_element(&port)?;
            }
            Uri::PyroMeta { tags, ns: at } => {
                let (host, port) = ns(at);
                t.serialize_element("PYROMETA")?;
                t.serialize_element(tags)?;
                t.serialize_element(&None::<String>)?;
                t.serialize_element(&host)?;
                t.serialize_element(&port)?;
            }
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Uri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let s = String::deserialize(d)?;
            return s.parse().map_err(serde::de::Error::custom);
        }
        d.deserialize_any(UriVisitor)
    }
}

struct UriVisitor;

impl<'de> serde::de::Visitor<'de> for UriVisitor {
    type Value = Uri;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Pyro URI: its text, or a Pyro URI class dict")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Uri, E> {
        v.parse().map_err(E::custom)
    }

    /// A Python 2 `str` (bytes) under marshal: Pyro4 on Python 2 sends URIs so.
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Uri, E> {
        std::str::from_utf8(v)
            .map_err(E::custom)?
            .parse()
            .map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Uri, A::Error> {
        use serde::de::Error as _;
        let mut state = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "state" => {
                    state = Some(map.next_value::<(
                        String,
                        StateObject,
                        Option<String>,
                        Option<String>,
                        Option<u16>,
                    )>()?)
                }
                "__class__" => {
                    let class: String = map.next_value()?;
                    if !class.ends_with(".URI") {
                        return Err(A::Error::custom(format!("a {class} is not a URI")));
                    }
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let (protocol, object, sockname, host, port) =
            state.ok_or_else(|| A::Error::custom("a URI class dict without its state"))?;
        let ns = match (host, port) {
            (Some(h), Some(p)) => Some((h, p)),
            _ => None,
        };
        match (protocol.as_str(), object, sockname, ns) {
            ("PYRO", StateObject::One(object), Some(path), _) => Ok(Uri::Pyro {
                object,
                location: Location::Unix(path),
            }),
            ("PYRO", StateObject::One(object), None, Some((host, port))) => Ok(Uri::Pyro {
                object,
                location: Location::Tcp { host, port },
            }),
            ("PYRONAME", StateObject::One(name), _, ns) => Ok(Uri::PyroName { name, ns }),
            ("PYROMETA", StateObject::Many(tags), _, ns) => Ok(Uri::PyroMeta { tags, ns }),
            ("PYROMETA", StateObject::One(tag), _, ns) => Ok(Uri::PyroMeta {
                tags: vec![tag],
                ns,
            }),
            (protocol, ..) => Err(A::Error::custom(format!(
                "an incomplete {protocol} URI state"
            ))),
        }
    }
}

/// The object of a URI state: a name, or (PYROMETA) a set of tags.
enum StateObject {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for StateObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StateObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object id or a set of tags")
            }
            fn visit_str<E>(self, v: &str) -> Result<StateObject, E> {
                Ok(StateObject::One(v.to_owned()))
            }
            /// A Python 2 `str` under marshal.
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<StateObject, E> {
                let text = std::str::from_utf8(v).map_err(E::custom)?;
                Ok(StateObject::One(text.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StateObject, A::Error> {
                let mut tags = Vec::new();
                while let Some(tag) = seq.next_element()? {
                    tags.push(tag);
                }
                Ok(StateObject::Many(tags))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) -> Uri {
        let uri: Uri = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(uri.to_string(), s, "display of {s}");
        assert_eq!(uri.to_string().parse::<Uri>().unwrap(), uri);
        uri
    }

    #[test]
    fn a_uri_reads_from_bytes_as_pyro4_on_python_2_sends_it_under_marshal() {
        use serde::de::value::{BytesDeserializer, Error as DeError};
        let text = b"PYRO:obj@127.0.0.1:1";
        let uri = Uri::deserialize(BytesDeserializer::<DeError>::new(text)).unwrap();
        assert_eq!(uri.to_string(), "PYRO:obj@127.0.0.1:1");
        assert!(Uri::deserialize(BytesDeserializer::<DeError>::new(b"\xffPYRO:x@h:1")).is_err());
    }

    #[test]
    fn text_and_uris_convert_through_the_std_traits() {
        let uri = Uri::try_from("PYRO:obj@127.0.0.1:1").unwrap();
        assert_eq!(Uri::try_from(uri.to_string()).unwrap(), uri);
        assert_eq!((&uri).into_uri().unwrap(), uri);
        assert_eq!(
            "PYRONAME:server".into_uri().unwrap().to_string(),
            "PYRONAME:server"
        );
        assert!(matches!(
            Uri::try_from("HTTP:x"),
            Err(Error::InvalidUri { .. })
        ));
        assert!(matches!("".into_uri(), Err(Error::InvalidUri { .. })));
    }

    #[test]
    fn pyro_uris_round_trip() {
        let u = round_trip("PYRO:obj_1234@127.0.0.1:9999");
        assert_eq!(u.object(), Some("obj_1234"));
        assert_eq!(
            u.location(),
            Some(&Location::Tcp {
                host: "127.0.0.1".into(),
                port: 9999
            })
        );
        let u = round_trip("PYRO:example.welcome@[::1]:4000");
        assert_eq!(
            u.location(),
            Some(&Location::Tcp {
                host: "::1".into(),
                port: 4000
            })
        );
        round_trip("PYRO:obj@localhost:1");
        let u = round_trip("PYRO:obj@./u:/tmp/rmi.sock");
        assert_eq!(u.location(), Some(&Location::Unix("/tmp/rmi.sock".into())));
        // Split at the first `@`, as Pyro's pattern is: a socket's path may hold one
        // (helper-167 #2: the object id was read as `obj@./u:/run/app`, and refused).
        let u = round_trip("PYRO:obj@./u:/run/app@1/d.sock");
        assert_eq!(u.object(), Some("obj"));
        assert_eq!(
            u.location(),
            Some(&Location::Unix("/run/app@1/d.sock".into()))
        );
        assert!("PYRO:a@b@127.0.0.1:1".parse::<Uri>().is_err());
    }

    #[test]
    fn logical_uris_round_trip() {
        assert_eq!(
            round_trip("PYRONAME:server"),
            Uri::PyroName {
                name: "server".into(),
                ns: None
            }
        );
        assert_eq!(
            round_trip("PYRONAME:a.b@127.0.0.1:9090"),
            Uri::PyroName {
                name: "a.b".into(),
                ns: Some(("127.0.0.1".into(), 9090))
            }
        );
        round_trip("PYRONAME:x@[::1]:77");
        let u = round_trip("PYROMETA:tag1,tag2@localhost:9090");
        assert_eq!(
            u,
            Uri::PyroMeta {
                tags: vec!["tag1".into(), "tag2".into()],
                ns: Some(("localhost".into(), 9090))
            }
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_ns_port_defaults() {
        let u: Uri = "pyroname:server@localhost".parse().unwrap();
        assert_eq!(u.to_string(), "PYRONAME:server@localhost:9090");
        let u: Uri = "Pyro:obj@127.0.0.1:5".parse().unwrap();
        assert_eq!(u.to_string(), "PYRO:obj@127.0.0.1:5");
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        let cases = [
            ("server", "missing scheme"),
            ("HTTP:x@h:1", "unknown scheme"),
            ("PYRO:obj", "needs a location"),
            ("PYRO:obj@127.0.0.1", "port is missing"),
            ("PYRO:obj@127.0.0.1:99999", "not a number"),
            ("PYRO:obj@127.0.0.1:abc", "not a number"),
            ("PYRO:@127.0.0.1:1", "object id is empty"),
            ("PYRO:obj@::1:80", "brackets"),
            ("PYRO:obj@[::1:80", "closing"),
            ("PYRO:obj@:80", "host is empty"),
            ("PYRONAME:", "name is empty"),
            ("PYROMETA:a,,b", "tag is empty"),
            ("PYRO:obj@./u:", "path is empty"),
            (
                "PYRO:obj@[::1]x80",
                "unexpected text after the IPv6 address",
            ),
            ("PYRO:obj@[::1]80", "unexpected text after the IPv6 address"),
            ("PYRO:obj@ho st:80", "invalid character"),
            ("PYRO:obj@host/x:80", "invalid character"),
            ("PYRO:obj@a@b:80", "the host \"a@b\" contains an invalid"),
            ("PYRONAME:x@h]:9090", "invalid character"),
            ("PYRONAME:my server", "contains whitespace or '@'"),
            ("PYRO:my obj@127.0.0.1:1", "contains whitespace or '@'"),
            ("PYROMETA:a,b c", "contains whitespace or '@'"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Uri>().expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains(text), "error names the input: {err}");
        }
    }

    #[test]
    fn only_pyro_uris_are_direct() {
        assert!(round_trip("PYRO:obj@127.0.0.1:1").is_direct());
        assert!(round_trip("PYRO:obj@./u:/tmp/rmi.sock").is_direct());
        assert!(!round_trip("PYRONAME:server").is_direct());
        assert!(!round_trip("PYROMETA:tag@localhost:9090").is_direct());
    }

    #[test]
    fn a_bracketed_ipv6_name_server_may_leave_out_its_port() {
        let u: Uri = "PYRONAME:x@[::1]".parse().unwrap();
        assert_eq!(
            u,
            Uri::PyroName {
                name: "x".into(),
                ns: Some(("::1".into(), 9090))
            }
        );
        assert_eq!(u.to_string(), "PYRONAME:x@[::1]:9090");
    }

    /// Pyro's URI class dicts, as a Python peer sends them (here in the JSON serializer).
    #[test]
    fn uri_class_dicts_decode_and_other_classes_are_refused() {
        use crate::protocol::codec::{DecodeLimits, Serializer};
        let decode = |json: &str| -> Result<Uri, String> {
            Serializer::Json
                .decode::<Uri>(json.as_bytes(), &DecodeLimits::default())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            decode(
                r#"{"__class__":"Pyro5.core.URI","state":["PYRO","obj",null,"127.0.0.1",4000]}"#
            ),
            Ok("PYRO:obj@127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            decode(
                r#"{"__class__":"Pyro4.core.URI","state":["PYRONAME","ns.x",null,"localhost",9091]}"#
            ),
            Ok(Uri::PyroName {
                name: "ns.x".into(),
                ns: Some(("localhost".into(), 9091))
            })
        );
        // A name server's host without its port is no name server.
        assert_eq!(
            decode(
                r#"{"__class__":"Pyro5.core.URI","state":["PYRONAME","x",null,"localhost",null]}"#
            ),
            Ok(Uri::PyroName {
                name: "x".into(),
                ns: None
            })
        );
        let err = decode(
            r#"{"__class__":"Pyro5.core.Proxy","state":["PYRO","obj",null,"127.0.0.1",4000]}"#,
        )
        .unwrap_err();
        assert!(err.contains("a Pyro5.core.Proxy is not a URI"), "{err}");
        let err = decode(r#"{"__class__":"Pyro5.core.URI"}"#).unwrap_err();
        assert!(err.contains("without its state"), "{err}");
        let err = decode("5").unwrap_err();
        assert!(err.contains("a Pyro URI"), "{err}");
        let err = decode(r#"{"state":["PYRO",5,null,"127.0.0.1",4000]}"#).unwrap_err();
        assert!(err.contains("an object id or a set of tags"), "{err}");
    }

    #[test]
    fn uri_serializes_as_its_string() {
        let u: Uri = "PYRO:obj@127.0.0.1:1".parse().unwrap();
        let bytes = bincode::serialize(&u).unwrap();
        let back: Uri = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, u);
    }
}
