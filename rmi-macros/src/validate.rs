//! The rules that relate a method to the runtime, to the generated code or to the other methods:
//! reserved names, oneway without a result, one method per wire name. They run after lowering
//! and report to the same collector (serde's `internals/check.rs`).

use crate::ctxt::{Ctxt, Origin};
use crate::model::{Access, Method, MethodKind, Service};
use crate::ty::is_unit;
use syn::ext::IdentExt;

/// Wire names the runtime uses itself (Pyro's batch and attribute access).
const RESERVED_WIRE_NAMES: &[&str] = &["<batch>", "__getattr__", "__setattr__"];
/// Rust names of the generated types' own methods, each with the type that has it: the proxy's
/// (also `clone` and `from`, which an inherent proxy method would shadow), the batch's and the
/// blocking proxy's, which carry every remote method beside their own.
const RESERVED_RUST_NAMES: &[(&str, &str)] = &[
    ("connect", "proxy"),
    ("builder", "proxy"),
    ("from_proxy", "proxy"),
    ("from_uri", "proxy"),
    ("proxy", "proxy"),
    ("into_proxy", "proxy"),
    ("with_timeout", "proxy"),
    ("with_options", "proxy"),
    ("with_annotation", "proxy"),
    ("with_correlation_id", "proxy"),
    ("with_retries", "proxy"),
    ("batch", "proxy"),
    ("clone", "proxy"),
    ("from", "proxy"),
    ("send", "batch"),
    ("send_oneway", "batch"),
    ("connect_with", "blocking proxy"),
    ("as_async", "blocking proxy"),
];

/// Checks every rule of this module, reporting each broken one to `cx`. With `server_only`,
/// no client type is generated, so no method name collides with one.
pub(crate) fn validate(service: &Service<'_>, server_only: bool, cx: &mut Ctxt) {
    for method in &service.methods {
        check_wire_name(method, cx);
        if !server_only {
            check_rust_name(method, cx);
        }
        check_oneway(method, cx);
        check_access(method, cx);
    }
    check_unique_wire_names(service, cx);
}

/// The wire name is not one the runtime handles itself.
fn check_wire_name(m: &Method<'_>, cx: &mut Ctxt) {
    if is_reserved_wire_name(&m.wire_name) {
        let wire_name = &m.wire_name;
        cx.error(
            m.origin,
            syn::Error::new(
                m.wire_span,
                format!("the wire name {wire_name:?} is reserved by the runtime (names starting with `_` but Python's special methods such as `__len__`, the private ones such as `__init__`, `<batch>`, `__getattr__`, `__setattr__`)"),
            ),
        );
    }
}

/// The Rust name does not collide with a method of a generated type.
fn check_rust_name(m: &Method<'_>, cx: &mut Ctxt) {
    // `r#connect` is `connect` to the compiler too.
    let name = m.ident.unraw().to_string();
    if let Some((_, owner)) = RESERVED_RUST_NAMES.iter().find(|(n, _)| *n == name) {
        cx.error(
            m.origin,
            syn::Error::new(
                m.ident.span(),
                format!(
                    "the method name `{name}` is reserved: the generated {owner} has its own `{name}`; rename it and keep the wire name with #[rmi(name = \"{name}\")]"
                ),
            ),
        );
    }
}

/// A oneway method returns `()`: its caller gets no reply. Nor is it `idempotent`: with no
/// reply, nothing tells whether it ran, so it is never retried and the flag would do nothing.
fn check_oneway(m: &Method<'_>, cx: &mut Ctxt) {
    if let MethodKind::Oneway(span) = m.kind {
        if !is_unit(&m.output) {
            let msg = "a oneway method cannot return a value: its caller gets no reply";
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        if m.idempotent {
            let msg = "a oneway method is never retried (no reply tells whether it ran): \
                       remove `idempotent`, or drop `oneway` to have it retried";
            cx.error(m.origin, syn::Error::new(span, msg));
        }
    }
}

/// A getter takes no argument, a setter one and returns nothing; neither is oneway or a
/// stream (Pyro reads and sets a property with a plain call).
fn check_access(m: &Method<'_>, cx: &mut Ctxt) {
    let (span, what) = match m.access {
        Access::Call => return,
        Access::Get(span) => (span, "a property"),
        Access::Set(span) => (span, "a setter"),
    };
    match m.kind {
        MethodKind::Oneway(_) => {
            let msg = format!(
                "{what} cannot be oneway: Pyro reads and sets properties with a plain call"
            );
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        MethodKind::Stream(_) => {
            let msg = format!("{what} cannot return a stream: make it a method");
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        MethodKind::Normal => {}
    }
    match m.access {
        Access::Get(_) if !m.args.is_empty() => {
            let msg = "a property takes no argument besides `&self`: it is read as `proxy.name` in Python";
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        Access::Set(_) if m.args.len() != 1 => {
            let msg = "a setter takes one argument besides `&self`: the value it sets";
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        Access::Set(_) if !is_unit(&m.reply) => {
            let msg = "a setter returns nothing (`()`, or `Result<(), E>` with #[rmi(raises)]): Pyro's `__setattr__` answers `None`";
            cx.error(m.origin, syn::Error::new(span, msg));
        }
        _ => {}
    }
}

/// Each wire name belongs to one method (but a property's getter and setter share one). A method that already broke a rule is left out, so
/// that it gets no second error for a name it may not keep. Two methods of which one has a
/// `#[cfg]` may never be compiled in together: the compiler decides, through
/// `expand::server::conditional_clashes`.
fn check_unique_wire_names(service: &Service<'_>, cx: &mut Ctxt) {
    let methods: Vec<&Method<'_>> = service
        .methods
        .iter()
        .filter(|m| !cx.has_errors(m.origin))
        .collect();
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].iter().any(|earlier| {
            earlier.wire_name == m.wire_name
                && earlier.access.clashes_with(m.access)
                && earlier.cfg_attrs().next().is_none()
                && m.cfg_attrs().next().is_none()
        }) {
            cx.error(
                Origin::Service,
                syn::Error::new(
                    m.wire_span,
                    format!(
                        "duplicate wire name {:?}: each method needs its own #[rmi(name = ...)]",
                        m.wire_name
                    ),
                ),
            );
        }
    }
}

/// Python's special methods that Pyro never exposes (its `_private_dunder_methods`, Pyro 4's
/// and 5's together): the object's own machinery, not something a caller may reach.
const PRIVATE_DUNDERS: &[&str] = &[
    "__init__",
    "__init_subclass__",
    "__class__",
    "__module__",
    "__weakref__",
    "__call__",
    "__new__",
    "__del__",
    "__repr__",
    "__unicode__",
    "__str__",
    "__format__",
    "__nonzero__",
    "__bool__",
    "__coerce__",
    "__cmp__",
    "__eq__",
    "__ne__",
    "__hash__",
    "__ge__",
    "__gt__",
    "__le__",
    "__lt__",
    "__dir__",
    "__enter__",
    "__exit__",
    "__copy__",
    "__deepcopy__",
    "__sizeof__",
    "__getattr__",
    "__setattr__",
    "__hasattr__",
    "__getattribute__",
    "__delattr__",
    "__instancecheck__",
    "__subclasscheck__",
    "__getinitargs__",
    "__getnewargs__",
    "__getstate__",
    "__setstate__",
    "__reduce__",
    "__reduce_ex__",
    "__subclasshook__",
];

/// Names starting with `_` (private to Python and Pyro), and the names of Pyro's batch call
/// and attribute access. A special method's name (`__len__`, `__getitem__`, `__iter__`…) is
/// not: Pyro 5 exposes those, and its proxy sends `len(proxy)`, `proxy[i]`, `proxy[i] = v`,
/// `del proxy[i]` and `for x in proxy` to them; the private ones are.
fn is_reserved_wire_name(name: &str) -> bool {
    let dunder = name.len() > 4 && name.starts_with("__") && name.ends_with("__");
    RESERVED_WIRE_NAMES.contains(&name)
        || PRIVATE_DUNDERS.contains(&name)
        || (name.starts_with('_') && !dunder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_wire_names_are_the_runtimes_and_underscored_ones() {
        for name in [
            "<batch>",
            "__getattr__",
            "__setattr__",
            "_private",
            "__init__",
            "__eq__",
            "__x",
            "____",
            "_x__",
        ] {
            assert!(is_reserved_wire_name(name), "{name}");
        }
        for name in [
            "batch",
            "getattr",
            "welcomeMessage",
            "a_b_",
            "__len__",
            "__getitem__",
            "__iter__",
        ] {
            assert!(!is_reserved_wire_name(name), "{name}");
        }
    }
}
